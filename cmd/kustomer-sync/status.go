package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// statusReport is the deployment as `status --json` prints it.
type statusReport = replica.Status

// workflowStatus is one workflow across the deployment.
type workflowStatus = replica.WorkflowStatus

func (a *app) statusCommand() *cobra.Command {
	var (
		stream, dlqStream, bucket string
		asJSON                    bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each workflow's state, backlog, rate and dead letters",
		Long: `Show the deployment as the workers report it: per workflow its state (running; paused on a
systemic Kustomer failure, why and since when; stopped when no live replica runs it), its
consumer's backlog (pending, ack pending, redelivered), the rate in force and the live replicas
running it, and its dead letters by class.

Workers publish their state in the replicas bucket every two seconds and at once when a workflow
pauses or resumes; a replica that stops leaves it at once, one that dies within six seconds.
The command exits 0 whatever the state: scripts read --json.`,
		Example: `  kustomer-sync status
  kustomer-sync status --json | jq '.workflows[] | select(.state == "paused")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			nc, js, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			rep, err := leads.CollectStatus(ctx, js, leads.StatusConfig{Stream: stream, DeadLetterStream: dlqStream, ReplicasBucket: bucket})
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			return writeStatus(a.stdout, rep)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&stream, "stream", leads.StreamDefault, "JetStream stream of lead events, whose consumers are the workflows'")
	fl.StringVar(&dlqStream, "dlq-stream", dlq.StreamDefault, "dead-letter stream")
	fl.StringVar(&bucket, "replicas-bucket", replica.BucketDefault, "KV bucket where replicas publish their state")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	bindEnv(fl, "stream", "KSYNC_STREAM") // as `run` reads it
	return cmd
}

func writeStatus(w io.Writer, rep statusReport) error {
	var rate float64
	names := make([]string, len(rep.Replicas))
	for i, r := range rep.Replicas {
		rate += r.RatePerMinute
		names[i] = r.Replica
	}
	switch len(rep.Replicas) {
	case 0:
		fmt.Fprintln(w, "No live replica.")
	default:
		fmt.Fprintf(w, "%d live %s (%s), rate in force %.0f/min of a %d/min budget\n",
			len(rep.Replicas), plural(len(rep.Replicas), "replica", "replicas"), strings.Join(names, ", "), rate, rep.Replicas[0].PerMinute)
	}
	for _, r := range rep.Replicas {
		if r.Admin == "" {
			fmt.Fprintf(w, "Replica %s has no admin server (no /metrics, /readyz or dashboard there).\n", r.Replica)
		}
	}
	if len(rep.Workflows) == 0 {
		_, err := fmt.Fprintln(w, "No workflows.")
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW\tSTATE\tSINCE\tREPLICAS\tRATE/MIN\tPENDING\tACK PENDING\tREDELIVERED\tDEAD LETTERS")
	for _, ws := range rep.Workflows {
		since := "-"
		if ws.Since != nil {
			since = ws.Since.Local().Format(time.DateTime)
		}
		state := ws.State
		if ws.PausedReplicas > 0 && ws.PausedReplicas < ws.Replicas {
			state = fmt.Sprintf("paused (%d of %d)", ws.PausedReplicas, ws.Replicas)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%d\t%d\t%d\t%s\n", ws.Workflow, state, since, ws.Replicas, ws.RatePerMinute,
			ws.Pending, ws.AckPending, ws.Redelivered, deadLetterCounts(ws.DeadLetters))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ws := range rep.Workflows {
		if ws.State == replica.StatePaused {
			fmt.Fprintf(w, "\n%s is paused: %s\n", ws.Workflow, ws.Reason)
		}
	}
	for _, ws := range rep.Workflows {
		if ws.Skipped > 0 {
			fmt.Fprintf(w, "\n%s skipped %d %s the stream held when its consumer was created (start: new, or a start time)\n", ws.Workflow, ws.Skipped, plural(int(ws.Skipped), "event", "events"))
		}
	}
	return nil
}

// deadLetterCounts shows counts by class in outcome.Failures order: "permanent=2 exhausted=1", or "0".
func deadLetterCounts(byClass map[outcome.Outcome]int) string {
	var parts []string
	for _, c := range outcome.Failures {
		if n := byClass[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c, n))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, " ")
}
