package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// benchModeConfig is the bench's workflow: one lead per event, its id as
// externalId (so the sandbox can count duplicates), in the given mode.
const benchModeConfig = `workflows:
  - name: bench
    subject: "leads.>"
    start: all
    mode: %s
    max_in_flight: %d
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
      emails: "{{trigger.email}}"
`

// benchMaxInFlight is the bench workflow's max_in_flight: enough single-lead
// events to keep a budget of 1,000 a minute busy with full batches while
// jobs of a few seconds run.
const benchMaxInFlight = 5000

// benchModeResult is one mode's run.
type benchModeResult struct {
	mode      string
	events    int
	created   int
	elapsed   time.Duration
	requests  int
	stats     sandbox.Stats
	finished  bool
	projected time.Duration // per-item: the time for every event at the measured rate
}

// benchModes runs --events single-lead events in bulk mode to the end (or
// --timeout), then per-item mode for one window, and prints both side by
// side: time, customers per budget unit (polls included), 429s, duplicates.
func (a *app) benchModes(ctx context.Context, f benchFlags) error {
	bulk, err := a.benchMode(ctx, f, mapping.ModeBulk, f.timeout)
	if err != nil {
		return err
	}
	item, err := a.benchMode(ctx, f, mapping.ModePerItem, f.window)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tevents\tcreated\ttime\tall created in\trequests\tcustomers/unit\tbulk jobs\tpolls\tlook-ups\t429s\tduplicates\t")
	for _, r := range []benchModeResult{bulk, item} {
		all := "not in " + r.elapsed.Round(time.Second).String()
		switch {
		case r.finished:
			all = r.elapsed.Round(100 * time.Millisecond).String()
		case r.projected > 0:
			all = "~" + r.projected.Round(time.Minute).String() + " (projected)"
		}
		perUnit := 0.0
		if r.requests > 0 {
			perUnit = float64(r.created) / float64(r.requests)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t\n", r.mode, r.events, r.created,
			r.elapsed.Round(100*time.Millisecond), all, r.requests, perUnit, r.stats.BulkJobs, r.stats.BulkPolls,
			r.stats.Lookups, r.stats.RateLimited, r.stats.Duplicates)
	}
	return tw.Flush()
}

func (a *app) benchMode(ctx context.Context, f benchFlags, mode string, limit time.Duration) (benchModeResult, error) {
	res := benchModeResult{mode: mode, events: f.events}
	dir, err := os.MkdirTemp("", "kustomer-sync-bench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	ns, err := worker.StartEmbedded(worker.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		return res, err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	sb, err := sandbox.New(sandbox.Config{RatePerMinute: f.rate, Window: f.window, Latency: f.latency, BulkDelay: f.bulkDelay})
	if err != nil {
		return res, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	srv := &http.Server{Handler: sb, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	defer sb.Close()
	sbURL := "http://" + ln.Addr().String()

	a.useOwnServer()
	nc, js, err := a.connectTo(ctx, ns.ClientURL())
	if err != nil {
		return res, err
	}
	defer nc.Close()
	cfg, err := mapping.Parse("bench.yaml", fmt.Appendf(nil, benchModeConfig, mode, benchMaxInFlight))
	if err != nil {
		return res, err
	}
	perMinute := int(float64(f.rate) * float64(time.Minute) / float64(f.window))
	replicas := 1
	if len(f.replicas) > 0 {
		replicas = f.replicas[0]
	}
	// The backlog first, as a batch sync meets it; the clock starts with the
	// workers.
	recs := make([]ingest.Event, f.events)
	for i := range recs {
		recs[i] = ingest.Event{Line: i + 1, ID: fmt.Sprintf("bench-%d", i), Data: fmt.Appendf(nil, `{"id":"lead-%d","name":"Lead %d","email":"lead%d@example.com"}`, i, i, i)}
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.StreamDefault, Subjects: []string{"leads.>"}, Storage: jetstream.FileStorage, Duplicates: worker.DedupWindowDefault, MaxAge: worker.StreamMaxAgeDefault}); err != nil {
		return res, err
	}
	if _, err := (ingest.Publisher{JS: js, Timeout: 10 * time.Minute}).Publish(ctx, "leads.bench", recs); err != nil {
		return res, err
	}
	fmt.Fprintf(a.stdout, "\nbench: %s mode, %d single-lead events, budget %d per %s, bulk jobs take %s, %d replica(s) ...\n",
		mode, f.events, f.rate, f.window, f.bulkDelay, replicas)
	start := time.Now()
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for i := range replicas {
		stop, err := startBenchReplica(ctx, ns.ClientURL(), sbURL, perMinute, fmt.Sprintf("bench-%d", i), cfg, a.log, nil)
		if err != nil {
			return res, err
		}
		stops = append(stops, stop)
	}
	var published chan error
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastReport := start
	for {
		select {
		case err := <-published:
			if err != nil {
				return res, err
			}
			published = nil
		case <-tick.C:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		now := time.Now()
		res.created = len(sb.CountByExternalID())
		res.elapsed = now.Sub(start)
		if res.created >= f.events {
			res.finished = true
			break
		}
		if res.elapsed >= limit {
			break
		}
		if now.Sub(lastReport) >= 10*time.Second {
			lastReport = now
			fmt.Fprintf(a.stdout, "  %s: %d created, %d requests\n", res.elapsed.Round(time.Second), res.created, sb.Stats().Requests)
		}
	}
	res.stats = sb.Stats()
	res.requests = res.stats.Requests
	if !res.finished && res.created > 0 {
		res.projected = time.Duration(float64(res.elapsed) * float64(f.events) / float64(res.created))
	}
	return res, nil
}
