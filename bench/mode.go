package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// Defaults of [ModeConfig].
const (
	EventsDefault    = 100000
	BulkDelayDefault = 2 * time.Second
	// modeMaxInFlight is the workflow's max_in_flight: enough single-lead
	// events to keep a budget of 1,000 a minute busy with full batches
	// while jobs of a few seconds run.
	modeMaxInFlight = 5000
)

// modeWorkflow is the mode benchmark's workflow: one lead per event, its id
// as externalId (so the sandbox counts duplicates), in the given mode.
const modeWorkflow = `workflows:
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

// ModeConfig is one run of a backlog in one mode. Zero fields take their
// defaults (those of [Config] for the budget).
type ModeConfig struct {
	Mode      string        // mapping.ModeBulk or mapping.ModePerItem
	Events    int           // single-lead events in the backlog; default EventsDefault
	Rate      int           // budget per Window; default RateDefault
	Window    time.Duration // default WindowDefault
	Latency   time.Duration // default LatencyDefault
	BulkDelay time.Duration // how long a bulk job takes; default BulkDelayDefault
	Replicas  int           // default ReplicasDefault
	// Limit ends the run when not every event is done by then.
	Limit time.Duration
	// Progress, when set, is called about every 10 s.
	Progress    func(elapsed time.Duration, created, requests int)
	NATSOptions []nats.Option
	Logger      zerolog.Logger
}

// ModeReport is what a mode run achieved.
type ModeReport struct {
	Config   ModeConfig // with its defaults
	Created  int
	Elapsed  time.Duration // from the workers' start until every event was created and acknowledged, or to Limit
	Finished bool          // every event created, and acknowledged: its outcome durable
	// Projected is, for an unfinished run, the time every event would take
	// at the rate measured.
	Projected time.Duration
	Stats     sandbox.Stats
}

// RunMode publishes the backlog first, as a batch sync meets it, then starts
// the workers and measures until every lead has its customer or Limit.
func RunMode(ctx context.Context, mc ModeConfig) (_ ModeReport, err error) {
	mc.Events = cmp.Or(mc.Events, EventsDefault)
	mc.BulkDelay = cmp.Or(mc.BulkDelay, BulkDelayDefault)
	bc, err := Config{Rate: mc.Rate, Window: mc.Window, Latency: mc.Latency, Replicas: mc.Replicas, NATSOptions: mc.NATSOptions, Logger: mc.Logger}.withDefaults()
	if err != nil {
		return ModeReport{}, err
	}
	mc.Rate, mc.Window, mc.Latency, mc.Replicas = bc.Rate, bc.Window, bc.Latency, bc.Replicas
	rep := ModeReport{Config: mc}
	if mc.Limit <= 0 || mc.Events < 1 {
		return rep, errors.New("bench: mode config: Limit and Events must be positive")
	}
	cfg, err := mapping.Parse("bench.yaml", fmt.Appendf(nil, modeWorkflow, mc.Mode, modeMaxInFlight))
	if err != nil {
		return rep, err
	}
	bl, err := newBacklog(ctx, mc.Events, sandbox.Config{RatePerMinute: mc.Rate, Window: mc.Window, Latency: mc.Latency, BulkDelay: mc.BulkDelay}, mc.NATSOptions, mc.Logger)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, bl.close(ctx)) }()
	sb := bl.sb

	perMinute := int(float64(mc.Rate) * float64(time.Minute) / float64(mc.Window))
	start := time.Now()
	for i := range mc.Replicas {
		stop, err := startReplica(ctx, bl.ns.ClientURL(), bc, worker.Config{
			Workflows:     cfg.Workflows,
			Kustomer:      kustomer.Config{BaseURL: sb.URL, APIKey: "bench"},
			RatePerMinute: perMinute,
			ReplicaID:     fmt.Sprintf("bench-%d", i),
			Logger:        mc.Logger.Level(max(mc.Logger.GetLevel(), zerolog.WarnLevel)),
		})
		if err != nil {
			return rep, err
		}
		defer stop()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := start
	for !rep.Finished && rep.Elapsed < mc.Limit {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		now := time.Now()
		rep.Created, rep.Elapsed = len(sb.CountByExternalID()), now.Sub(start)
		if rep.Created >= mc.Events {
			// Created in Kustomer; done once the workers have made every
			// outcome durable (ledger, results, run log) and acknowledged it.
			if rep.Finished, err = allAcked(ctx, bl.js, mc.Events); err != nil {
				return rep, err
			}
		}
		if mc.Progress != nil && now.Sub(last) >= 10*time.Second {
			last = now
			mc.Progress(rep.Elapsed, rep.Created, sb.Stats().Requests)
		}
	}
	rep.Stats = sb.Stats()
	if !rep.Finished && rep.Created > 0 {
		rep.Projected = time.Duration(float64(rep.Elapsed) * float64(mc.Events) / float64(rep.Created))
	}
	return rep, nil
}
