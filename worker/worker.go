package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/metrics"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// Worker is the kustomer-sync service of one replica: it consumes lead
// events for its workflows and creates the customers in Kustomer under this
// replica's share of the organisation's rate budget. It owns the Kustomer
// client and the limiter that paces it, the share of the budget (a
// [replica.Budget]), the ledger, the run log, the metrics and the state it publishes
// for `kustomer-sync status`.
//
// Create it with New, run it with Start, replace its workflows with Reload,
// and end it with Stop (drain) or StopAndCancel (hard stop); Stopped tells
// when it has ended. A Worker runs once. Its methods are safe for concurrent
// use.
type Worker struct {
	cfg      Config
	nc       *nats.Conn
	js       jetstream.JetStream
	log      zerolog.Logger
	limiter  *loop.Limiter
	kustomer Kustomer
	client   *kustomer.Client // the client kustomer wraps, if it does
	budget   *replica.Budget
	metrics  *metrics.Set

	ledger *ledger.Ledger
	// bulkFeed counts the bulk requests of the whole deployment, for the
	// bulk workflows' pacers (worker/bulk.go).
	bulkFeed ledger.BulkFeed
	runs     *runlog.Log
	// replayKey verifies replay headers; an event whose headers do not
	// verify is a new event.
	replayKey *dlq.ReplayKey
	flows     []*flow
	// running holds flows once Start has made them, for readers on other
	// goroutines (Workflows).
	running atomic.Pointer[[]*flow]

	// repairMu serialises recreating what was deleted while running.
	repairMu sync.Mutex

	// mu serialises Start, Reload and the stops.
	mu    sync.Mutex
	phase phase
	// leave ends the budget's heartbeats; cancelled after the budget's key
	// is purged, once no request is in flight any more.
	leave context.CancelFunc
	// work is the parent of every event's context: StopAndCancel cancels
	// it at once, Stop when its drain deadline passes.
	work       context.Context
	cancelWork context.CancelFunc

	// The running workflows' loops (empty between a reload's drain and
	// start): cancel stops fetching, hardStop cancels events in flight.
	cancel   context.CancelFunc
	hardStop context.CancelFunc
	wg       *conc.WaitGroup

	stopped chan struct{}
}

type phase int

const (
	phaseNew phase = iota
	phaseStarted
	phaseStopped
)

// New checks cfg, fills its defaults and builds the worker's Kustomer
// client, limiter, budget and metrics; nothing touches NATS until Start.
func New(cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js := cfg.JetStream
	if js == nil {
		var err error
		if js, err = jetstream.New(cfg.Conn); err != nil {
			return nil, fmt.Errorf("worker: jetstream: %w", err)
		}
	}
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: cfg.RatePerMinute, Burst: cfg.RateBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	kcfg := cfg.Kustomer
	observe, pace := kcfg.OnResponse, ObserveRateLimits(lim)
	kcfg.OnResponse = func(rl kustomer.RateLimit) {
		if observe != nil {
			observe(rl)
		}
		pace(rl)
	}
	w := &Worker{cfg: cfg, nc: cfg.Conn, js: js, log: cfg.Logger, limiter: lim, stopped: make(chan struct{})}
	bcfg := cfg.Budget
	bcfg.PerMinute, bcfg.ReplicaID, bcfg.Clock, bcfg.Logger = cfg.RatePerMinute, cfg.ReplicaID, cfg.Clock, cfg.Logger
	if w.budget, err = replica.NewBudget(js, cfg.Conn, lim, bcfg); err != nil {
		return nil, err
	}
	// The heartbeat carries the workflows' states, for `kustomer-sync status`.
	w.budget.SetWorkflows(w.Workflows)
	if w.metrics, err = metrics.New(cfg.Registerer, lim, w.budget); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if count := kcfg.OnRequest; count != nil {
		kcfg.OnRequest = func(ri kustomer.RequestInfo) { count(ri); w.metrics.ObserveRequest(ri) }
	} else {
		kcfg.OnRequest = w.metrics.ObserveRequest
	}
	if cfg.TracerProvider != nil {
		kcfg.WrapTransport = tracing.Transport
	}
	client, err := kustomer.New(kcfg)
	if err != nil {
		return nil, err
	}
	w.kustomer, w.client = client, client
	if cfg.WrapKustomer != nil {
		w.kustomer = cfg.WrapKustomer(client)
	}
	w.work, w.cancelWork = context.WithCancel(context.Background())
	return w, nil
}

// Start joins the budget, creates or checks the streams, the ledger and one
// durable consumer per workflow, probes Kustomer once, then consumes in the
// background until Stop or StopAndCancel. ctx bounds the start only: its
// end later stops nothing. When the probe fails (a wrong base URL or key,
// an unreachable host) Start still succeeds, but every workflow starts
// paused, fetches nothing and resumes by itself once a later probe succeeds.
// After an error the worker holds nothing and Start may be called again.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.phase {
	case phaseStarted:
		return errors.New("worker: already started")
	case phaseStopped:
		return errors.New("worker: stopped: a worker runs once, create another with New")
	}
	// The budget's heartbeats live as long as the worker, not as ctx: a
	// replica holds its share until its last request in flight ended.
	life, leave := context.WithCancel(context.WithoutCancel(ctx))
	abandon := context.AfterFunc(ctx, leave)
	startBy := time.Now().Add(w.cfg.StartupTimeout)
	err := w.retryStartup(ctx, w.cfg.StartupTimeout, "join the rate budget", func(context.Context) error { return w.budget.Start(life) })
	if !abandon() && err == nil {
		err = fmt.Errorf("worker: start: %w", ctx.Err())
	}
	if err != nil {
		w.leaveBudget(ctx)
		leave()
		return err
	}
	w.leave = leave
	if err := w.startFlows(ctx, max(time.Until(startBy), time.Second)); err != nil {
		w.leaveBudget(ctx)
		leave()
		return err
	}
	w.phase = phaseStarted
	w.log.Info().Str("stream", w.cfg.Stream.Name).Int("workflows", len(w.flows)).Str("replica", w.cfg.ReplicaID).Msg("worker started")
	return nil
}

// startFlows sets up and starts the loops of w.cfg.Workflows, retrying the
// set-up for up to timeout while NATS is not ready.
func (w *Worker) startFlows(ctx context.Context, timeout time.Duration) error {
	if err := w.retryStartup(ctx, timeout, "create the streams and consumers", w.setup); err != nil {
		return err
	}
	flows := w.flows // readers of running never see a later setup's appends
	w.running.Store(&flows)
	if err := w.budget.Beat(ctx); err != nil {
		w.log.Warn().Err(err).Msg("could not publish this replica's workflows at once: the next heartbeat does")
	}
	src := metrics.Source{JetStream: w.js, DeadLetterStream: w.cfg.DeadLetter.Name}
	for _, f := range w.flows {
		src.Consumers = append(src.Consumers, metrics.Consumer{Workflow: f.wf.Name, Consumer: f.cons})
	}
	w.metrics.Consumers.Add(w, src)
	w.probeAtStart(ctx)
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	workCtx, hardStop := context.WithCancel(w.work)
	w.cancel, w.hardStop, w.wg = cancel, hardStop, &conc.WaitGroup{}
	for _, f := range w.flows {
		w.wg.Go(func() { w.fetchLoop(fetchCtx, workCtx, f) })
		w.wg.Go(func() { w.probeLoop(fetchCtx, f) })
	}
	targets := make([]leads.MaxDeliveryTarget, 0, len(w.flows))
	for _, f := range w.flows {
		targets = append(targets, leads.MaxDeliveryTarget{Consumer: f.consumerName, Workflow: f.wf.Name, DeadLetterSubject: f.wf.DeadLetterSubject, ReplayKey: w.replayKey})
	}
	w.followBulk(fetchCtx)
	w.wg.Go(func() {
		if err := leads.WatchMaxDeliveries(fetchCtx, w.nc, w.js, w.cfg.Stream.Name, targets, w.log); err != nil && fetchCtx.Err() == nil {
			w.log.Error().Err(err).Msg("max-deliveries watcher stopped")
		}
	})
	return nil
}

// stopFlows stops fetching and waits for the events in flight until ctx is
// done; those still running then are cancelled, and stopFlows waits until
// they returned (left unacknowledged for redelivery). It returns ctx.Err()
// when the drain did not finish in time.
func (w *Worker) stopFlows(ctx context.Context) error {
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		w.hardStop()
		<-done
	}
	w.hardStop()
	w.metrics.Consumers.Remove(w)
	w.cancel, w.hardStop, w.wg = nil, nil, nil
	w.running.Store(nil) // Workflows says none run, as admin's /readyz reads it
	// A stopped worker pauses nothing: a gauge left at 1 would report a
	// workflow paused that this process no longer runs (after a reload).
	for _, f := range w.flows {
		w.metrics.Paused.DeleteLabelValues(f.wf.Name)
	}
	return err
}

// Stop stops fetching and waits for the events in flight until ctx is done;
// those still running then are cancelled and left unacknowledged for
// redelivery. Only once no request to Kustomer is in flight does the replica
// leave the budget, so the others never take its share while it still
// spends it. Stop returns ctx.Err() when the drain did not finish in time;
// Stopped is closed when it returns. Stopping a stopped worker does nothing.
func (w *Worker) Stop(ctx context.Context) error { return w.stop(ctx) }

// StopAndCancel is the hard stop: it cancels the events in flight at once
// (they are left unacknowledged for redelivery, their claims expire), waits
// until they returned, then leaves the budget, as Stop does. ctx bounds
// leaving the budget.
func (w *Worker) StopAndCancel(ctx context.Context) error {
	w.cancelWork()
	return w.stop(ctx)
}

// Stopped is closed once the worker stopped: after Stop or StopAndCancel,
// or after a Reload that could start neither the new nor the previous
// workflows.
func (w *Worker) Stopped() <-chan struct{} { return w.stopped }

// drainDeadlinePassed is logged, with the error, when a stop or a reload
// left events unfinished.
const drainDeadlinePassed = "drain deadline passed; unfinished events are left for redelivery"

func (w *Worker) stop(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopLocked(ctx)
}

func (w *Worker) stopLocked(ctx context.Context) error {
	if w.phase == phaseStopped {
		return nil
	}
	var err error
	if w.phase == phaseStarted {
		err = w.stopFlows(ctx)
		if err != nil {
			// Logged here, before "worker stopped": the caller need not.
			w.log.Warn().Err(err).Msg(drainDeadlinePassed)
		}
		w.leaveBudget(ctx)
		w.leave()
		w.client.CloseIdleConnections()
		w.log.Info().Msg("worker stopped")
	}
	w.cancelWork()
	w.phase = phaseStopped
	close(w.stopped)
	return err
}

// leaveBudget deletes this replica's key so the other replicas grow their
// shares at once; if NATS is gone their TTL does it instead, so it does not
// wait for long.
func (w *Worker) leaveBudget(ctx context.Context) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := w.budget.Stop(bctx); err != nil {
		w.log.Warn().Err(err).Msg("could not leave the budget: the other replicas take this share when its heartbeat expires")
	}
}

// Reload replaces the running workflows with workflows. They are checked
// first, and so is the leads stream against them: if they do not do, Reload
// returns an error wrapping ErrReloadRefused and the running workflows go
// on. Otherwise the events in flight drain within Config.DrainTimeout (as on
// Stop) and the new workflows start: consumers of new workflows are created;
// removed workflows are no longer consumed, their durable consumers are kept
// (for the replicas still running them, or a later config). The replica
// keeps its share of the budget throughout.
//
// If the new workflows cannot start, the previous ones start again and
// Reload returns the error; if neither can, the worker stops (Stopped is
// closed). If ctx ends during the drain, nothing starts and Reload returns
// ctx.Err(): the caller is stopping the worker.
func (w *Worker) Reload(ctx context.Context, workflows []*mapping.Workflow) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != phaseStarted {
		return errors.New("worker: reload: the worker is not running")
	}
	if err := checkWorkflows(workflows); err != nil {
		return reloadRefusedError{err}
	}
	if _, err := leads.CheckStream(ctx, w.js, w.streamConfig(ctx), workflows); err != nil {
		return reloadRefusedError{err}
	}
	// Only now, the reload accepted: a refused one drains nothing.
	w.log.Info().Stringer("deadline", w.cfg.DrainTimeout).Msg("draining in-flight events for the reload")
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.DrainTimeout)
	err := w.stopFlows(drainCtx)
	cancel()
	if err != nil {
		w.log.Warn().Err(err).Msg(drainDeadlinePassed)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("worker: reload: %w", ctx.Err())
	}
	prev := w.cfg.Workflows
	w.cfg.Workflows = workflows
	err = w.startFlows(ctx, w.cfg.StartupTimeout)
	if err == nil {
		return nil
	}
	w.log.Error().Err(err).Msg("the new workflows cannot start; starting the previous ones again")
	w.stopFlows(context.Background()) //nolint:errcheck // nothing is in flight
	w.cfg.Workflows = prev
	if perr := w.startFlows(ctx, w.cfg.StartupTimeout); perr != nil {
		_ = w.stopLocked(ctx)
		return fmt.Errorf("worker: reload: the new workflows cannot start (%w), nor can the previous ones: %w", err, perr)
	}
	return fmt.Errorf("worker: reload: the new workflows cannot start, the previous ones run again: %w", err)
}

// streamConfig is the leads stream as this replica would manage it: its
// workflows' subjects, and those of every other live replica's workflows
// (see leads.StreamConfig.WithLiveReplicas).
func (w *Worker) streamConfig(ctx context.Context) leads.StreamConfig {
	return w.cfg.Stream.WithLiveReplicas(ctx, w.js, w.cfg.Budget.Bucket, w.budget.ID(), w.log)
}

func (w *Worker) setup(ctx context.Context) error {
	w.flows = nil
	// "start: new" begins after what the stream holds before this start, so
	// events published while the streams and consumers are set up still count.
	var before jetstream.StreamState
	if st, err := w.js.Stream(ctx, w.cfg.Stream.Name); err == nil {
		before = st.CachedInfo().State
	}
	st, err := leads.EnsureStream(ctx, w.js, w.streamConfig(ctx).JetStreamConfig(w.cfg.Workflows), leads.WorkflowNeeds(w.cfg.Workflows))
	if err != nil {
		return err
	}
	// Consumers right after the stream: when replicas start together, one
	// may read the state after another created the stream and a publisher
	// stored events there; the sooner the consumer exists, the less likely.
	for _, wf := range w.cfg.Workflows {
		f, err := w.newFlow(ctx, st, wf, before)
		if err != nil {
			return err
		}
		w.flows = append(w.flows, f)
	}
	for _, a := range leads.AbandonedConsumers(ctx, st, w.cfg.Workflows) {
		w.log.Warn().Str("consumer", a.Consumer).Str("workflow", a.Workflow).Uint64("pending", a.Pending).Msg(a.String())
	}
	runs, led, key, err := w.ensureStores(ctx, w.cfg.Workflows)
	if err != nil {
		return err
	}
	w.runs, w.ledger, w.replayKey = runs, led, key
	return nil
}
