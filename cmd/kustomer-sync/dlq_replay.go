package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
)

func (a *app) dlqReplayCommand(open openStore) *cobra.Command {
	var f dlqFilterFlags
	var dryRun, asJSON bool
	var rate float64
	cmd := &cobra.Command{
		Use:   "replay [ID...]",
		Short: "Republish dead letters to their original subject",
		Long: `Republish dead-letter entries to the subject they came from, by ID, by filter, or --all.
A Loop event is limited to its failed items; the event goes through the current workflow
configuration, so fix the cause first. The replay keeps the original event's id; its run record
links the dead letter and the earlier runs, and if it fails again the new dead letter says so.

Before an entry is republished, its workflow must still read its subject: the stream that
captures the subject has the workflow's consumer (ksync-<workflow>, which the worker keeps for
each configured workflow). An entry whose workflow is gone is kept, with the reason, and the
command exits 1.

Replay headers are signed with the deployment's key (KV bucket KSYNC_KEYS, created on first use),
so this command needs read access to that bucket; a worker ignores replay headers it cannot
verify. Each entry is removed once JetStream has stored its republish; replaying the same entries
twice, or from two terminals at once, publishes them once. An ID the stream never held is an
error; an entry already replayed or purged is reported as gone. A progress bar shows on a
terminal.`,
		Example: `  kustomer-sync dlq replay 42
  kustomer-sync dlq replay --workflow signup --class exhausted --since 1h
  kustomer-sync dlq replay --all --dry-run
  kustomer-sync dlq replay --all --rate 10 --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !f.selects(args) {
				return usageError{errors.New("say what to replay: entry IDs, a filter (--workflow, --class, --since, --grep) or --all")}
			}
			if rate < 0 {
				return usageError{fmt.Errorf("--rate %v: want 0 (unlimited) or more messages per second", rate)}
			}
			return f.withStore(cmd.Context(), open, args, func(store *dlq.Store, filter dlq.Filter) error {
				return a.replay(cmd.Context(), store, filter, dryRun, rate, asJSON)
			})
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be replayed (and kept); change nothing")
	cmd.Flags().Float64Var(&rate, "rate", 0, "at most this many messages per second (0: unlimited)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON")
	return cmd
}

// replayView is the JSON outcome of `dlq replay`.
type replayView struct {
	DryRun          bool           `json:"dry_run"`
	Replayed        int            `json:"replayed"`
	AlreadyReplayed int            `json:"already_replayed"`
	Entries         []dlqEntryView `json:"entries"`
	Kept            []keptView     `json:"kept"`
	Gone            []uint64       `json:"gone"`
	Error           string         `json:"error,omitempty"`
}

type keptView struct {
	ID       uint64 `json:"id"`
	Workflow string `json:"workflow"`
	Reason   string `json:"reason"`
}

func (a *app) replay(ctx context.Context, store *dlq.Store, filter dlq.Filter, dryRun bool, rate float64, asJSON bool) error {
	var bar func(int)
	shown := 0
	opts := dlq.ReplayOptions{DryRun: dryRun, Rate: rate, Check: leads.ReplayCheck(store.JetStream())}
	if !asJSON {
		opts.Progress = func(done, total int) {
			if bar == nil {
				bar = a.progress(total, "replaying")
			}
			bar(done - shown)
			shown = done
		}
	}
	res, err := store.Replay(ctx, filter, opts)
	if err == nil && len(res.Kept) > 0 && !dryRun {
		err = fmt.Errorf("dlq replay: %d %s kept: %w", len(res.Kept), plural(len(res.Kept), "entry", "entries"), res.Kept[0].Reason)
		if len(res.Kept) > 1 {
			err = fmt.Errorf("dlq replay: %d entries kept, their workflows no longer read their subjects (see above)", len(res.Kept))
		}
	}
	if asJSON {
		v := replayView{DryRun: dryRun, Replayed: res.Replayed, AlreadyReplayed: res.Skipped, Entries: dlqViews(res.Entries), Kept: []keptView{}, Gone: res.Gone}
		for _, k := range res.Kept {
			v.Kept = append(v.Kept, keptView{ID: k.Record.ID, Workflow: k.Record.Workflow, Reason: k.Reason.Error()})
		}
		if v.Gone == nil {
			v.Gone = []uint64{}
		}
		if err != nil {
			v.Error = err.Error()
		}
		if werr := writeJSON(a.stdout, v); werr != nil && err == nil {
			err = werr
		}
		return err
	}
	keep := "Kept"
	if dryRun {
		keep = "Would keep"
	}
	for _, k := range res.Kept {
		fmt.Fprintf(a.stdout, "%s entry %d (workflow %s): %v\n", keep, k.Record.ID, orDash(k.Record.Workflow), k.Reason)
	}
	for _, id := range res.Gone {
		fmt.Fprintf(a.stdout, "Entry %d is already gone (replayed or purged before).\n", id)
	}
	if dryRun {
		if err != nil {
			return err
		}
		if len(res.Entries) == 0 {
			_, err := fmt.Fprintln(a.stdout, "Nothing to replay.")
			return err
		}
		if err := writeDLQTable(a.stdout, res.Entries, time.Now()); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Dry run: would replay %d %s; nothing changed.\n", len(res.Entries), plural(len(res.Entries), "entry", "entries"))
		return err
	}
	summary := fmt.Sprintf("Replayed %d %s", res.Replayed, plural(res.Replayed, "entry", "entries"))
	if res.Skipped > 0 {
		summary += fmt.Sprintf(", %d already replayed before (removed)", res.Skipped)
	}
	if res.Replayed+res.Skipped == 0 && len(res.Kept) == 0 {
		if err != nil {
			return err
		}
		summary = "Nothing to replay"
	}
	if _, werr := fmt.Fprintln(a.stdout, summary+"."); werr != nil && err == nil {
		err = werr
	}
	return err
}
