package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// runsListLimitDefault is how many runs `runs list` shows unless told.
const runsListLimitDefault = 50

func (a *app) runsCommand() *cobra.Command {
	var stream string
	cmd := &cobra.Command{
		Use:   "runs",
		Short: "Read the run log: one record per processed event",
		Long: `Every event the worker processes gets a run record before it is acknowledged: workflow,
event id, stream sequence, start and end, status, and per Loop item the outcome, the Kustomer
customer id, the attempts and the error. Records live in a JetStream stream (default RUNS) with
age and size limits.

Statuses: succeeded, partial, failed, dead_lettered, paused.`,
		Example: `  kustomer-sync runs list
  kustomer-sync runs list --workflow signup --status partial --since 24h
  kustomer-sync runs show LEADS-1042-1-signup`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&stream, "stream", runlog.StreamDefault, "run log stream")
	open := func(cmd *cobra.Command) (*runlog.Log, func(), error) {
		nc, js, err := a.connect(cmd.Context())
		if err != nil {
			return nil, nil, err
		}
		l, err := runlog.Open(cmd.Context(), js, runlog.Config{Stream: stream})
		if err != nil {
			nc.Close()
			return nil, nil, a.missingStream(err, stream, "no run log yet")
		}
		return l, nc.Close, nil
	}
	cmd.AddCommand(a.runsListCommand(open), a.runsShowCommand(open))
	return cmd
}

type openRunLog func(*cobra.Command) (*runlog.Log, func(), error)

func (a *app) runsListCommand(open openRunLog) *cobra.Command {
	var (
		workflow, status, since string
		limit                   int
		asJSON                  bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first",
		Long: `List run records as a table, newest first (by start time): id, workflow, status, items
created of total, start time, duration and error (the event's, or the first failed item's, with how
many others failed). Filters combine. --json prints the records in full.`,
		Example: `  kustomer-sync runs list
  kustomer-sync runs list --status dead_lettered --limit 10
  kustomer-sync runs list --workflow signup --since 2025-03-01 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := runlog.Filter{Workflow: workflow, Status: runlog.Status(status), Limit: limit}
			if status != "" && !f.Status.Valid() {
				return usageError{fmt.Errorf("--status %q: want one of %v", status, runlog.Statuses)}
			}
			if limit < 0 {
				return usageError{fmt.Errorf("--limit %d: want 0 (no limit) or more", limit)}
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return usageError{err}
				}
				f.Since = t
			}
			l, done, err := open(cmd)
			if err != nil {
				return err
			}
			defer done()
			runs, err := l.List(cmd.Context(), f)
			if err != nil {
				return err
			}
			if asJSON {
				if runs == nil {
					runs = []runlog.Record{}
				}
				return writeJSON(a.stdout, runs)
			}
			if len(runs) == 0 {
				_, err := fmt.Fprintln(a.stdout, "No runs.")
				return err
			}
			return writeRunsTable(a.stdout, runs)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&workflow, "workflow", "", "only runs of this workflow")
	fl.StringVar(&status, "status", "", "only runs with this status: succeeded, partial, failed, dead_lettered, paused")
	fl.StringVar(&since, "since", "", "only runs started since a duration ago (30m, 24h, 7d) or a time (RFC 3339 or 2006-01-02)")
	fl.IntVar(&limit, "limit", runsListLimitDefault, "at most this many runs, the newest (0: all)")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func writeRunsTable(w io.Writer, runs []runlog.Record) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tSTATUS\tITEMS\tSTARTED\tTOOK\tERROR")
	for _, r := range runs {
		status := string(r.Status)
		if r.Replay {
			status += " (replay)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, r.Workflow, status, r.Done(), len(r.Items),
			r.Started.Local().Format(time.DateTime), took(r), clip(r.Reason(), 60))
	}
	return tw.Flush()
}

func took(r runlog.Record) string {
	if r.Started.IsZero() || r.Ended.Before(r.Started) {
		return "-"
	}
	return r.Ended.Sub(r.Started).Round(time.Millisecond).String()
}

func (a *app) runsShowCommand(open openRunLog) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one run with its items",
		Long: `Show one run record: its workflow, status, event, subject and stream sequence, times, error,
and per Loop item the outcome, customer id, attempts, class and error. A run's ID is
<stream>-<sequence>-<delivery>-<workflow>: LEADS-1042-1-signup is the first delivery of event
1042 of the LEADS stream to workflow signup ('runs list' shows them).`,
		Example: `  kustomer-sync runs show LEADS-1042-1-signup
  kustomer-sync runs show LEADS-1042-1-signup --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, done, err := open(cmd)
			if err != nil {
				return err
			}
			defer done()
			r, err := l.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, r)
			}
			return writeRun(a.stdout, r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func writeRun(w io.Writer, r runlog.Record) error {
	fields := newFieldList(w)
	row := fields.row
	row("Run", r.ID)
	row("Workflow", r.Workflow)
	row("Status", string(r.Status))
	if rp := r.ReplayOf; rp != nil {
		row("Replay of", fmt.Sprintf("dead letter %d in %s (replay %d of the event; %d attempts before it)", rp.DeadLetter, orDash(rp.Stream), rp.Count, rp.Attempts))
		row("Failed run", rp.Run)
		row("Original run", rp.OriginalRun)
	} else if r.Replay {
		row("Replay", "yes")
	}
	row("Event", r.EventID)
	row("Trace", r.TraceID)
	row("Subject", r.Subject)
	if r.StreamSeq != 0 {
		row("Stream seq", strconv.FormatUint(r.StreamSeq, 10))
	}
	row("Started", r.Started.Local().Format(time.RFC3339Nano))
	row("Ended", r.Ended.Local().Format(time.RFC3339Nano))
	row("Took", took(r))
	row("Error", r.Error)
	if err := fields.flush(); err != nil {
		return err
	}
	if len(r.Items) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nItems:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	bulk := slices.ContainsFunc(r.Items, func(it runlog.Item) bool { return it.BulkJob != "" })
	if bulk {
		fmt.Fprintln(tw, "  INDEX\tOUTCOME\tCUSTOMER\tATTEMPTS\tBULK JOB\tCLASS\tERROR")
	} else {
		fmt.Fprintln(tw, "  INDEX\tOUTCOME\tCUSTOMER\tATTEMPTS\tCLASS\tERROR")
	}
	for _, it := range r.Items {
		class := ""
		if it.Outcome.Failed() {
			class = it.Outcome.String()
		}
		job := ""
		if bulk {
			job = orDash(it.BulkJob) + "\t"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s%s\t%s\n", it.Index, it.Outcome.Summary(), orDash(it.CustomerID), it.Attempts,
			job, orDash(class), orDash(strings.Join(strings.Fields(it.Error), " ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, it := range r.Items {
		if len(it.Dropped) > 0 {
			fmt.Fprintf(w, "  item %d: not sent by the update: %s\n", it.Index, strings.Join(it.Dropped, "; "))
		}
	}
	return nil
}
