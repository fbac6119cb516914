package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// demoLeads is testdata/leads.jsonl (a test keeps the two identical), embedded
// so `demo` works from any directory.
//
//go:embed demo_leads.jsonl
var demoLeads []byte

func (a *app) demoCommand() *cobra.Command {
	var (
		f         workerFlags
		leadsFile string
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "See it work: embedded NATS + Kustomer sandbox + worker, sample leads, a summary",
		Long: `Start an embedded NATS server, a local Kustomer sandbox and the worker in one process,
publish sample leads (testdata/leads.jsonl, built in), wait until every event is processed, and
print a summary: customers created, failures with their reasons, time taken. No account, no
setup, nothing left behind (the NATS store lives in a temporary folder, unless --data-dir).`,
		Example: `  kustomer-sync demo
  kustomer-sync demo --leads my-leads.jsonl --config workflows.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(f.check(cmd), checkFlags(cmd, positiveDuration("wait"))); err != nil {
				return err
			}
			if !cmd.Flags().Changed("log-level") {
				// The summary is the demo's output; logs only for trouble.
				a.log = a.log.Level(zerolog.WarnLevel)
			}
			return a.demo(cmd.Context(), &f, leadsFile, wait, cmd.Flags().Changed("data-dir"))
		},
	}
	f.register(cmd)
	// A demo is over in seconds: no admin server unless asked for.
	f.adminAddr = "off"
	cmd.Flags().Lookup("admin-addr").DefValue = f.adminAddr
	cmd.Flags().StringVar(&leadsFile, "leads", "", "publish these leads (JSON, JSONL or CSV) instead of the built-in sample")
	cmd.Flags().DurationVar(&wait, "wait", 2*time.Minute, "give up when events are not all processed within this time")
	// The demo keeps nothing unless asked: no "data" default, and no
	// KSYNC_DATA_DIR, which may point at a real worker's store. It always
	// listens on a free port.
	dataDir := cmd.Flags().Lookup("data-dir")
	dataDir.DefValue, f.dataDir = "", ""
	dataDir.Usage = "keep the embedded NATS store in this folder (default: a temporary folder, removed at the end)"
	delete(dataDir.Annotations, envAnnotation)
	_ = cmd.Flags().MarkHidden("sandbox")
	_ = cmd.Flags().MarkHidden("embedded-addr")
	return cmd
}

func (a *app) demo(ctx context.Context, f *workerFlags, leadsFile string, wait time.Duration, keepData bool) error {
	started := time.Now()
	if !keepData {
		dir, err := os.MkdirTemp("", "kustomer-sync-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		f.dataDir = dir
	}
	f.useSandbox = true
	f.embeddedAddr = "127.0.0.1:0" // never collide with a NATS already on 4222
	a.useOwnServer()

	var (
		recs []ingest.Event
		err  error
	)
	if leadsFile != "" {
		file, err := os.Open(leadsFile)
		if err != nil {
			return err
		}
		recs, err = ingest.Reader{Name: leadsFile, IDField: "id"}.ReadAll(file)
		file.Close()
		if err != nil {
			return err
		}
	} else if recs, err = (ingest.Reader{Name: "built-in leads", Format: ingest.FormatJSONL, IDField: "id"}).ReadAll(bytes.NewReader(demoLeads)); err != nil {
		return err
	}

	st, err := a.startStack(ctx, f)
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		st.stop(stopCtx, a)
	}()

	wf := st.config.Workflows[0]
	subject := demoSubject(wf.Subject)
	fmt.Fprintf(a.stdout, "Publishing %d leads to %s (workflow %q) ...\n", len(recs), subject, wf.Name)
	if _, err := (ingest.Publisher{JS: st.js}).Publish(ctx, subject, recs); err != nil {
		return err
	}
	progress := a.progress(len(recs), "processing")
	runs, err := runlog.New(ctx, st.js, runlog.Config{})
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	records, err := waitForRuns(waitCtx, runs, len(recs), progress)
	if err != nil {
		return err
	}
	return a.printDemoSummary(st, records, len(recs), time.Since(started))
}

// demoSubject turns a workflow's subject filter into a subject to publish to.
func demoSubject(filter string) string {
	s := strings.ReplaceAll(filter, ">", "demo")
	return strings.ReplaceAll(s, "*", "demo")
}

// waitForRuns polls the run log until one run per event has finished.
func waitForRuns(ctx context.Context, runs *runlog.Log, events int, progress func(int)) ([]runlog.Record, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	seen := 0
	for {
		recs, err := runs.List(ctx, runlog.Filter{})
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		bySeq := map[uint64]runlog.Record{}
		for _, r := range recs {
			if old, ok := bySeq[r.StreamSeq]; !ok || r.Ended.After(old.Ended) {
				bySeq[r.StreamSeq] = r
			}
		}
		if n := len(bySeq); n > seen {
			progress(n - seen)
			seen = n
		}
		if seen >= events {
			out := make([]runlog.Record, 0, len(bySeq))
			for _, r := range bySeq {
				out = append(out, r)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].StreamSeq < out[j].StreamSeq })
			return out, nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("demo: only %d of %d events processed in time (see the log above)", seen, events)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

func (a *app) printDemoSummary(st *stack, runs []runlog.Record, events int, took time.Duration) error {
	created, failed := 0, 0
	var failures []string
	for _, r := range runs {
		for _, it := range r.Items {
			switch {
			case it.Outcome.Succeeded():
				created++
			default:
				failed++
				failures = append(failures, fmt.Sprintf("  event %s item %d (%s): %s", r.EventID, it.Index, it.Outcome, it.Error))
			}
		}
		if len(r.Items) == 0 && r.Error != "" {
			failed++
			failures = append(failures, fmt.Sprintf("  event %s (%s): %s", r.EventID, r.Status, r.Error))
		}
	}
	stats := st.sandbox.Stats()
	w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nSummary\n")
	fmt.Fprintf(w, "  events processed\t%d of %d\n", len(runs), events)
	fmt.Fprintf(w, "  customers created\t%d (sandbox holds %d)\n", created, len(st.sandbox.Customers()))
	fmt.Fprintf(w, "  items failed\t%d (dead-lettered, reasons below)\n", failed)
	fmt.Fprintf(w, "  Kustomer requests\t%d (429s: %d)\n", stats.Requests, stats.RateLimited)
	fmt.Fprintf(w, "  time taken\t%s\n", took.Round(time.Millisecond))
	if err := w.Flush(); err != nil {
		return err
	}
	if len(failures) > 0 {
		fmt.Fprintln(a.stdout, "\nFailures:")
		for _, l := range failures {
			fmt.Fprintln(a.stdout, l)
		}
	}
	customers := st.sandbox.Customers()
	if len(customers) > 0 {
		fmt.Fprintln(a.stdout, "\nFirst customers created:")
		for _, c := range customers[:min(5, len(customers))] {
			fmt.Fprintf(a.stdout, "  %s  %v\n", c.ID, c.Attributes["displayName"])
		}
	}
	return nil
}
