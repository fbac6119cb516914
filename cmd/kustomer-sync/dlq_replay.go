package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func (a *app) dlqReplayCommand(open openStore) *cobra.Command {
	var f dlqFilterFlags
	var dryRun, asJSON, noWait bool
	var rate float64
	var wait time.Duration
	var runsStream string
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
terminal.

Then it waits (--wait, default 1m; --no-wait not at all) for each replayed event's run record in the
run log (stream RUNS, --runs-stream) and prints its run id and status, and for a run that did not
succeed, why. A run paused by a systemic failure (the event stays queued) is waited past. Without a
run log (no worker has run) it does not wait and says so on stderr.

Exit status: 0 when every replayed event's run succeeded (or, with --no-wait, was republished);
1 when an entry is kept, a replayed run failed in part or in whole (partial, failed, dead_lettered:
its new dead letter is in dlq list), or a run did not end within --wait (its outcome is then
unknown, not lost: follow it with runs list); 2 on a usage error.`,
		Example: `  kustomer-sync dlq replay 42
  kustomer-sync dlq replay --workflow signup --class exhausted --since 1h
  kustomer-sync dlq replay --all --dry-run
  kustomer-sync dlq replay --all --rate 10 --json
  kustomer-sync dlq replay 42 --wait 5m        # a slow or busy worker
  kustomer-sync dlq replay --all --no-wait     # republish, do not wait for the runs`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !f.selects(args) {
				return usageError{errors.New("say what to replay: entry IDs, a filter (--workflow, --class, --since, --grep) or --all")}
			}
			if rate < 0 {
				return usageError{fmt.Errorf("--rate %v: want 0 (unlimited) or more messages per second", rate)}
			}
			if wait < 0 {
				return usageError{fmt.Errorf("--wait %v: want 0 (do not wait) or a duration (30s, 5m)", wait)}
			}
			if noWait {
				if cmd.Flags().Changed("wait") {
					return usageError{errors.New("--no-wait and --wait: give one")}
				}
				wait = 0
			}
			return f.withStore(cmd.Context(), open, args, func(store *dlq.Store, filter dlq.Filter) error {
				return a.replay(cmd.Context(), store, filter, replayWait{timeout: wait, stream: runsStream}, dryRun, rate, asJSON)
			})
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be replayed (and kept); change nothing")
	cmd.Flags().Float64Var(&rate, "rate", 0, "at most this many messages per second (0: unlimited)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON")
	cmd.Flags().DurationVar(&wait, "wait", replayWaitDefault, "how long to wait for the replayed events' runs (0: do not wait)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the replayed events' runs (--wait 0)")
	cmd.Flags().StringVar(&runsStream, "runs-stream", runlog.StreamDefault, "run log stream the replayed events' runs are read from")
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
	// Runs are the replayed events' runs, one per entry replayed; absent
	// when not waited for.
	Runs  []replayRunView `json:"runs,omitempty"`
	Error string          `json:"error,omitempty"`
}

// replayRunView is the run of one replayed entry.
type replayRunView struct {
	Entry    uint64 `json:"entry"`
	Workflow string `json:"workflow"`
	// Run and Status are the replay's run record; Status is "pending"
	// (and Run empty, or the paused run) when no run ended within --wait.
	Run    string `json:"run,omitempty"`
	Status string `json:"status"`
	Done   int    `json:"done"`
	Items  int    `json:"items"`
	Reason string `json:"reason,omitempty"`
}

type keptView struct {
	ID       uint64 `json:"id"`
	Workflow string `json:"workflow"`
	Reason   string `json:"reason"`
}

func (a *app) replay(ctx context.Context, store *dlq.Store, filter dlq.Filter, wait replayWait, dryRun bool, rate float64, asJSON bool) error {
	start := time.Now()
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
	var runs []replayRunView
	if !dryRun && len(res.Entries) > 0 && wait.timeout > 0 {
		var werr error
		runs, werr = a.waitReplayRuns(ctx, store, res.Entries, wait, start)
		if werr == nil {
			werr = replayRunsErr(runs, wait.timeout)
		}
		err = errors.Join(err, werr)
	}
	if asJSON {
		v := replayView{DryRun: dryRun, Replayed: res.Replayed, AlreadyReplayed: res.Skipped, Entries: dlqViews(res.Entries), Kept: []keptView{}, Gone: res.Gone, Runs: runs}
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
	for _, r := range runs {
		line := fmt.Sprintf("Entry %d (workflow %s): run %s %s, %d/%d items", r.Entry, r.Workflow, r.Run, r.Status, r.Done, r.Items)
		switch {
		case r.Status == replayPending && r.Run == "":
			line = fmt.Sprintf("Entry %d (workflow %s): no run ended within %v; follow it with: kustomer-sync runs list --workflow %s", r.Entry, r.Workflow, wait.timeout, r.Workflow)
		case r.Status == replayPending:
			line = fmt.Sprintf("Entry %d (workflow %s): run %s paused, the event is queued until the workflow resumes: %s", r.Entry, r.Workflow, r.Run, r.Reason)
		case r.Reason != "":
			line += ": " + r.Reason
		}
		if _, werr := fmt.Fprintln(a.stdout, line+"."); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// replayWaitDefault is how long `dlq replay` waits for the replayed
// events' runs unless told.
const replayWaitDefault = time.Minute

// replayPollInterval is how often `dlq replay` reads the run log while it
// waits.
const replayPollInterval = 250 * time.Millisecond

// replayPending is the status of a replayed entry whose run did not end in
// time.
const replayPending = "pending"

// replayWait says whether and where `dlq replay` waits for the runs.
type replayWait struct {
	timeout time.Duration // 0: do not wait
	stream  string        // the run log's stream
}

// waitReplayRuns waits up to wait.timeout for the run record of each
// replayed entry: the newest run whose replay_of names the entry in store's
// stream, past any paused run. Runs are read from the run log from a
// minute before start (the worker's clock may be behind this one).
func (a *app) waitReplayRuns(ctx context.Context, store *dlq.Store, entries []dlq.Record, wait replayWait, start time.Time) ([]replayRunView, error) {
	l, err := runlog.Open(ctx, store.JetStream(), runlog.Config{Stream: wait.stream})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		fmt.Fprintf(a.stderr, "Not waiting for the replayed events' runs: there is no run log (stream %s) yet; follow them with kustomer-sync runs list once a worker runs.\n", cmp.Or(wait.stream, runlog.StreamDefault))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dlq replay: waiting for the runs: %w", err)
	}
	runs := make([]replayRunView, len(entries))
	for i, e := range entries {
		runs[i] = replayRunView{Entry: e.ID, Workflow: e.Workflow, Status: replayPending}
	}
	ctx, cancel := context.WithTimeout(ctx, wait.timeout)
	defer cancel()
	tick := time.NewTicker(replayPollInterval)
	defer tick.Stop()
	for {
		recs, err := l.List(ctx, runlog.Filter{Since: start.Add(-time.Minute)})
		if err != nil {
			if ctx.Err() != nil {
				return runs, nil // the deadline passed mid-read: what is known so far
			}
			return runs, fmt.Errorf("dlq replay: waiting for the runs: %w", err)
		}
		pending := 0
		for i := range runs {
			if runs[i].Status != replayPending {
				continue
			}
			for _, r := range recs { // newest first
				if r.ReplayOf == nil || r.ReplayOf.DeadLetter != runs[i].Entry || r.ReplayOf.Stream != store.Name() {
					continue
				}
				runs[i].Run, runs[i].Done, runs[i].Items, runs[i].Reason = r.ID, r.Done(), len(r.Items), r.Reason()
				if r.Status != runlog.Paused {
					runs[i].Status = string(r.Status)
				}
				break
			}
			if runs[i].Status == replayPending {
				pending++
			}
		}
		if pending == 0 {
			return runs, nil
		}
		select {
		case <-ctx.Done():
			return runs, nil
		case <-tick.C:
		}
	}
}

// replayRunsErr is the error `dlq replay` exits with for runs that did not
// succeed or did not end in time; nil when every run succeeded.
func replayRunsErr(runs []replayRunView, timeout time.Duration) error {
	var failed, pending int
	for _, r := range runs {
		switch r.Status {
		case string(runlog.Succeeded):
		case replayPending:
			pending++
		default:
			failed++
		}
	}
	var errs []error
	if failed > 0 {
		errs = append(errs, fmt.Errorf("dlq replay: %d replayed %s failed again (see above; their dead letters: kustomer-sync dlq list)", failed, plural(failed, "event", "events")))
	}
	if pending > 0 {
		errs = append(errs, fmt.Errorf("dlq replay: %d replayed %s without an outcome after %v (republished, not lost: kustomer-sync runs list)", pending, plural(pending, "event", "events"), timeout))
	}
	return errors.Join(errs...)
}
