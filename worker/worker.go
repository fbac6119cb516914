package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/subject"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

const (
	// AckWaitDefault is how long JetStream waits for an ack before
	// redelivering. The worker sends InProgress well within it while an
	// event's items are still running, so a slow Loop is never redelivered.
	AckWaitDefault = 30 * time.Second
	// MaxDeliverDefault bounds redeliveries of one event (crashes, pauses);
	// beyond it the event is dead-lettered with class max_deliveries.
	MaxDeliverDefault = 20
	// MaxEventBytesDefault is the largest event accepted; larger ones are
	// dead-lettered as invalid_event.
	MaxEventBytesDefault = 1 << 20
	// PauseNakDelayDefault is how long an event waits before redelivery when
	// its workflow paused.
	PauseNakDelayDefault = 5 * time.Second
	// fetchWait is how long one pull request waits for events.
	fetchWait = 2 * time.Second
	// ConsumerPrefixDefault prefixes the durable consumer of each workflow.
	ConsumerPrefixDefault = "ksync-"
)

// Kustomer is what the worker needs of a Kustomer client.
type Kustomer interface {
	CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error)
	CustomerByExternalID(ctx context.Context, externalID string) (*kustomer.Customer, error)
	// For workflows with match (look-ups) and on_match: update.
	CustomerByEmail(ctx context.Context, email string) (*kustomer.Customer, error)
	CustomerByPhone(ctx context.Context, phone string) (*kustomer.Customer, error)
	UpdateCustomer(ctx context.Context, id string, body any) (*kustomer.Customer, error)
}

// Config configures a [Worker]. Conn and Workflows are required; every other
// zero field takes its default (the XxxDefault constants of this package and
// of the packages named). [New] fills the defaults and checks every rule,
// including those between fields.
type Config struct {
	// Conn is the NATS connection the worker uses; required. The worker
	// neither drains nor closes it.
	Conn *nats.Conn
	// JetStream is Conn's JetStream context; default jetstream.New(Conn).
	// Set it for a JetStream domain or API prefix.
	JetStream jetstream.JetStream

	// Workflows are the workflows to run, each on its own durable consumer;
	// required, with distinct names. [Worker.Reload] replaces them.
	Workflows []*mapping.Workflow

	// Kustomer configures the Kustomer client the worker builds (base URL,
	// API key, Timeout: default kustomer.DefaultTimeout). The worker's
	// limiter sees every response's rate-limit headers and its metrics count
	// every request; Kustomer.OnResponse and OnRequest, when set, see them
	// first.
	Kustomer kustomer.Config
	// WrapKustomer, when set, wraps the client the worker built: whatever it
	// returns is what the worker calls (tests inject faults with it).
	WrapKustomer func(Kustomer) Kustomer

	// RatePerMinute is the organisation's Kustomer budget per minute, shared
	// by every replica of the deployment through replica.Budget; default
	// RatePerMinuteDefault.
	RatePerMinute int
	// RateBurst is how many requests may go at once after idle time; default
	// RatePerMinute/20 (a replica gets its share of it).
	RateBurst int
	// Budget says where the replicas meet to share RatePerMinute (bucket,
	// TTL, pause subject); its PerMinute, ReplicaID, Clock and Logger are
	// this Config's and must be left zero.
	Budget replica.BudgetConfig

	Stream     StreamConfig
	DeadLetter dlq.StreamConfig
	RunLog     runlog.Config
	// Ledger.Lease (default ledger.LeaseDefault) must exceed Kustomer.Timeout: a
	// slow request's claim must outlive the request, or another replica
	// could claim the item and create it again.
	Ledger ledger.Config
	// ResultsStream captures the results subjects; default ResultsStreamDefault.
	ResultsStream string
	// KeyBucket keeps the replay key that replays are verified with; default
	// dlq.KeyBucketDefault. Created if missing.
	KeyBucket string

	AckWait        time.Duration // default AckWaitDefault
	MaxDeliver     int           // default MaxDeliverDefault
	MaxEventBytes  int           // default MaxEventBytesDefault
	PauseNakDelay  time.Duration // default PauseNakDelayDefault
	ConsumerPrefix string        // default ConsumerPrefixDefault
	// BreakerThreshold is how many consecutive transient failures across
	// items pause a workflow; 0 means loop's default.
	BreakerThreshold int
	// ReplicaID names this replica in the ledger, the budget and logs:
	// letters, digits, '-', '_', '=' and inner dots; default host-pid (see
	// [DefaultReplicaID]). Replicas of a deployment need distinct IDs.
	ReplicaID string
	// StartupTimeout bounds how long Start retries joining the budget and
	// creating the streams, buckets and consumers while NATS is unreachable
	// or JetStream has no leader yet (a cluster still forming); default
	// StartupTimeoutDefault. Reload retries as long.
	StartupTimeout time.Duration
	// DrainTimeout bounds the drain of [Worker.Reload]; default
	// DrainTimeoutDefault. [Worker.Stop] drains until its ctx ends instead.
	DrainTimeout time.Duration

	// Logger receives one event per decision; the zero value logs nothing.
	Logger zerolog.Logger
	// Clock drives the limiter, breakers, claims and retries; default
	// loop.SystemClock().
	Clock loop.Clock
	// Registerer takes the worker's metrics; default
	// prometheus.DefaultRegisterer. Workers of one process that share a
	// Registerer share their counters.
	Registerer prometheus.Registerer
	// TracerProvider, when set, traces each event (see worker/tracing.go);
	// nil makes no spans.
	TracerProvider trace.TracerProvider
}

// Defaults of [Config] besides those of the packages it names.
const (
	// RatePerMinuteDefault is Kustomer's Enterprise plan limit per organisation.
	RatePerMinuteDefault = loop.PerMinuteDefault
	// DrainTimeoutDefault bounds how long a reload waits for events in flight.
	DrainTimeoutDefault = 30 * time.Second
)

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("worker: config: Conn (a NATS connection) is required")
	}
	if err := checkWorkflows(c.Workflows); err != nil {
		return err
	}
	if c.Budget.PerMinute != 0 || c.Budget.ReplicaID != "" || c.Budget.Clock != nil {
		return errors.New("worker: config: Budget.PerMinute, Budget.ReplicaID and Budget.Clock come from RatePerMinute, ReplicaID and Clock: leave them zero")
	}
	c.Stream.setDefaults()
	c.ResultsStream = cmp.Or(c.ResultsStream, ResultsStreamDefault)
	c.AckWait = cmp.Or(c.AckWait, AckWaitDefault)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, MaxDeliverDefault)
	c.MaxEventBytes = cmp.Or(c.MaxEventBytes, MaxEventBytesDefault)
	c.PauseNakDelay = cmp.Or(c.PauseNakDelay, PauseNakDelayDefault)
	c.ConsumerPrefix = cmp.Or(c.ConsumerPrefix, ConsumerPrefixDefault)
	c.ReplicaID = cmp.Or(c.ReplicaID, DefaultReplicaID())
	c.RatePerMinute = cmp.Or(c.RatePerMinute, RatePerMinuteDefault)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DrainTimeoutDefault)
	c.StartupTimeout = cmp.Or(c.StartupTimeout, StartupTimeoutDefault)
	c.Ledger.Lease = cmp.Or(c.Ledger.Lease, ledger.LeaseDefault)
	c.Kustomer.Timeout = cmp.Or(c.Kustomer.Timeout, kustomer.DefaultTimeout)
	c.Clock = cmp.Or[loop.Clock](c.Clock, loop.SystemClock())
	c.Registerer = cmp.Or[prometheus.Registerer](c.Registerer, prometheus.DefaultRegisterer)
	switch {
	case c.RatePerMinute < 1:
		return fmt.Errorf("worker: config: RatePerMinute %d: want 1 or more", c.RatePerMinute)
	case c.RateBurst < 0:
		return fmt.Errorf("worker: config: RateBurst %d: want 0 (RatePerMinute/20) or more", c.RateBurst)
	case c.AckWait < 0, c.PauseNakDelay < 0, c.DrainTimeout < 0, c.StartupTimeout < 0, c.Ledger.Lease < 0:
		return errors.New("worker: config: AckWait, PauseNakDelay, DrainTimeout, StartupTimeout and Ledger.Lease must not be negative")
	case c.MaxDeliver < 0, c.MaxEventBytes < 0:
		return errors.New("worker: config: MaxDeliver and MaxEventBytes must not be negative")
	case c.Ledger.Lease <= c.Kustomer.Timeout:
		return fmt.Errorf("worker: config: Ledger.Lease %s must exceed Kustomer.Timeout %s, or a slow request's item could be claimed and created by another replica", c.Ledger.Lease, c.Kustomer.Timeout)
	case !replica.ValidID(c.ReplicaID):
		return fmt.Errorf("worker: config: ReplicaID %q: only letters, digits, '-', '_', '=' and inner dots are allowed", c.ReplicaID)
	}
	return nil
}

// checkWorkflows wants at least one workflow, with distinct names.
func checkWorkflows(workflows []*mapping.Workflow) error {
	if len(workflows) == 0 {
		return errors.New("worker: no workflows")
	}
	seen := map[string]bool{}
	for _, wf := range workflows {
		if seen[wf.Name] {
			return fmt.Errorf("worker: workflow %q defined twice", wf.Name)
		}
		seen[wf.Name] = true
	}
	return nil
}

// DefaultReplicaID names a replica by host and process, so replicas on one
// host differ and a restarted process is a new replica.
func DefaultReplicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", cmp.Or(host, "replica"), os.Getpid())
}

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
	metrics  *metrics

	ledger *ledger.Ledger
	runs   *runlog.Log
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
	if w.metrics, err = newMetrics(cfg.Registerer, lim, w.budget); err != nil {
		return nil, err
	}
	if count := kcfg.OnRequest; count != nil {
		kcfg.OnRequest = func(ri kustomer.RequestInfo) { count(ri); w.metrics.observeRequest(ri) }
	} else {
		kcfg.OnRequest = w.metrics.observeRequest
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
	err := RetryStartup(ctx, w.cfg.StartupTimeout, func(context.Context) error { return w.budget.Start(life) })
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
	if err := RetryStartup(ctx, timeout, w.setup); err != nil {
		return err
	}
	flows := w.flows // readers of running never see a later setup's appends
	w.running.Store(&flows)
	if err := w.budget.Beat(ctx); err != nil {
		w.log.Warn().Err(err).Msg("could not publish this replica's workflows at once: the next heartbeat does")
	}
	w.metrics.consumers.add(w)
	w.probeAtStart(ctx)
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	workCtx, hardStop := context.WithCancel(w.work)
	w.cancel, w.hardStop, w.wg = cancel, hardStop, &conc.WaitGroup{}
	for _, f := range w.flows {
		w.wg.Go(func() { w.fetchLoop(fetchCtx, workCtx, f) })
		w.wg.Go(func() { w.probeLoop(fetchCtx, f) })
	}
	targets := make([]MaxDeliveryTarget, 0, len(w.flows))
	for _, f := range w.flows {
		targets = append(targets, MaxDeliveryTarget{Consumer: f.consumerName, Workflow: f.wf.Name, DeadLetterSubject: f.wf.DeadLetterSubject, ReplayKey: w.replayKey})
	}
	w.wg.Go(func() {
		if err := WatchMaxDeliveries(fetchCtx, w.nc, w.js, w.cfg.Stream.Name, targets, w.log); err != nil && fetchCtx.Err() == nil {
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
	w.metrics.consumers.remove(w)
	w.cancel, w.hardStop, w.wg = nil, nil, nil
	w.running.Store(nil) // Workflows says none run, as admin's /readyz reads it
	// A stopped worker pauses nothing: a gauge left at 1 would report a
	// workflow paused that this process no longer runs (after a reload).
	for _, f := range w.flows {
		w.metrics.paused.DeleteLabelValues(f.wf.Name)
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
		return fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	if _, err := CheckStream(ctx, w.js, w.streamConfig(ctx), workflows); err != nil {
		return fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.DrainTimeout)
	err := w.stopFlows(drainCtx)
	cancel()
	if err != nil {
		w.log.Warn().Err(err).Msg("drain deadline passed; unfinished events are left for redelivery")
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

func (w *Worker) setup(ctx context.Context) error {
	w.flows = nil
	// "start: new" begins after what the stream holds before this start, so
	// events published while the streams and consumers are set up still count.
	var before jetstream.StreamState
	if st, err := w.js.Stream(ctx, w.cfg.Stream.Name); err == nil {
		before = st.CachedInfo().State
	}
	st, err := ensureStream(ctx, w.js, w.streamConfig(ctx).jetstreamConfig(w.cfg.Workflows), workflowNeeds(w.cfg.Workflows))
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
	for _, a := range abandoned(ctx, st, w.cfg.Workflows) {
		w.log.Warn().Str("consumer", a.Consumer).Str("workflow", a.Workflow).Uint64("pending", a.Pending).Msg(a.String())
	}
	runs, led, key, err := w.ensureStores(ctx, w.cfg.Workflows)
	if err != nil {
		return err
	}
	w.runs, w.ledger, w.replayKey = runs, led, key
	return nil
}

// streamConfig is the leads stream as this replica would manage it: its
// workflows' subjects (added by jetstreamConfig), plus those of every other
// live replica's workflows, so that a reload or a start with fewer
// workflows never stops the stream capturing what another replica still
// runs. A replica whose heartbeat cannot be read is not counted.
func (w *Worker) streamConfig(ctx context.Context) StreamConfig {
	c := w.cfg.Stream
	c.Subjects = slices.Clone(c.Subjects)
	replicas, err := replica.Read(ctx, w.js, w.cfg.Budget.Bucket)
	keep := err != nil
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot read the other replicas' workflows: the leads stream keeps every subject it captures")
	}
	for _, r := range replicas {
		if r.Replica == w.budget.ID() {
			continue
		}
		for _, s := range r.Workflows {
			if s.Subject == "" {
				// A replica of an earlier version does not say what it
				// consumes: keep everything, as when none can be read.
				keep = true
				continue
			}
			c.Subjects = append(c.Subjects, s.Subject)
		}
	}
	if keep {
		// Whatever the stream captures now is kept, rather than drop a
		// subject another replica may run.
		if st, err := w.js.Stream(ctx, c.Name); err == nil && st.CachedInfo().Config.Metadata[managedByKey] == managedByValue {
			c.Subjects = append(c.Subjects, st.CachedInfo().Config.Subjects...)
		}
	}
	return c
}

func (w *Worker) newFlow(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, before jetstream.StreamState) (*flow, error) {
	name := w.cfg.ConsumerPrefix + wf.Name
	cons, err := w.ensureConsumer(ctx, st, wf, name, before)
	if err != nil {
		return nil, err
	}
	breaker, err := loop.NewBreaker(loop.BreakerConfig{Threshold: w.cfg.BreakerThreshold, Clock: w.cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("worker: workflow %s: %w", wf.Name, err)
	}
	f := &flow{
		wf:           wf,
		consumerName: name,
		cons:         cons,
		breaker:      breaker,
		slots:        make(chan struct{}, max(wf.MaxInFlight, 1)),
		opened:       make(chan struct{}, 1),
		running:      closedChan(),
		log:          w.log.With().Str("workflow", wf.Name).Logger(),
	}
	f.since = w.cfg.Clock.Now()
	if wf.Mode == mapping.ModeBulk {
		if f.bulk, err = w.newBatcher(f); err != nil {
			return nil, err
		}
	} else if f.runner, err = loop.New(loop.Config{
		Concurrency: wf.Concurrency,
		Policy:      retryPolicy(wf.Retry),
		Limiter:     w.limiter,
		Breaker:     breaker,
		Clock:       w.cfg.Clock,
		Go:          func(fn func()) { f.goroutines.Go(fn) },
	}); err != nil {
		return nil, fmt.Errorf("worker: workflow %s: %w", wf.Name, err)
	}
	w.metrics.paused.WithLabelValues(wf.Name).Set(0)
	f.onStorePause = func(paused bool) {
		if paused || !f.breaker.Open() {
			w.metrics.paused.WithLabelValues(wf.Name).Set(map[bool]float64{true: 1, false: 0}[paused])
		}
	}
	breaker.OnChange(func(open bool, reason string) {
		f.setState(open, reason, breaker.Cause(), w.cfg.Clock.Now())
		f.setRunning(!open && !f.storeHeld())
		if open {
			f.log.Warn().Str("reason", reason).Msg("workflow paused: Kustomer is failing systemically; holding events and probing")
			w.metrics.paused.WithLabelValues(wf.Name).Set(1)
			signal(f.opened)
		} else {
			f.log.Info().Msg("workflow resumed")
			w.metrics.paused.WithLabelValues(wf.Name).Set(0)
		}
		// Published at once, for `kustomer-sync status`.
		w.budget.Refresh()
	})
	return f, nil
}

// runsWorkflow reports whether this worker has a workflow of that name.
func (w *Worker) runsWorkflow(name string) bool {
	return slices.ContainsFunc(w.flows, func(f *flow) bool { return f.wf.Name == name })
}

// firstFlowFor reports whether f is the first of this worker's flows that
// consumes subject: the one that acts for all of them on a message none of
// them owns.
func (w *Worker) firstFlowFor(f *flow, subj string) bool {
	for _, g := range w.flows {
		if subject.Covers(g.wf.Subject, subj) {
			return g == f
		}
	}
	return false
}

func (w *Worker) workflowNames() []string {
	names := make([]string, len(w.flows))
	for i, f := range w.flows {
		names[i] = f.wf.Name
	}
	return names
}

// ensureConsumer creates the workflow's durable consumer where the
// workflow's start option says, or updates an existing one, which keeps its
// position (a changed start does not move it).
func (w *Worker) ensureConsumer(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, name string, before jetstream.StreamState) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "kustomer-sync workflow " + wf.Name,
		FilterSubject: wf.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		MaxAckPending: max(1000, wf.MaxInFlight*16),
		Metadata:      map[string]string{managedByKey: managedByValue, workflowKey: wf.Name},
	}
	log := w.log.With().Str("workflow", wf.Name).Str("consumer", name).Logger()
	existing, err := st.Consumer(ctx, name)
	if err == nil {
		// Another replica may just have created it: either way, keep its
		// start, and what its creation recorded (skipped, continues).
		prev := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		for _, k := range []string{skippedKey, continuesKey} {
			if v, ok := prev.Metadata[k]; ok {
				cfg.Metadata[k] = v
			}
		}
		cons, err := st.UpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("worker: workflow %s: update consumer %s: %w", wf.Name, name, err)
		}
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("worker: workflow %s: consumer %s: %w", wf.Name, name, err)
	}
	// What the stream holds on the subject now: what start: new or a
	// start time skips is counted against it.
	var held uint64
	var where string
	switch wf.Start {
	case mapping.StartNew:
		held = heldOn(ctx, st, wf.Subject)
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, before.LastSeq+1
		where = fmt.Sprintf("at stream sequence %d, with events published from now on (start: new)", before.LastSeq+1)
	case mapping.StartTime:
		held = heldOn(ctx, st, wf.Subject)
		t := wf.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		where = "at the first event published at or after " + t.Format(time.RFC3339) + " (start: " + t.Format(time.RFC3339) + ")"
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		where = "at the first event the stream holds on " + wf.Subject + " (start: all)"
		if pred, ok := predecessor(ctx, st, wf, w.cfg.Workflows); ok {
			// A renamed workflow: it continues where the consumer of its
			// old name stopped, so nothing is skipped or processed twice.
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pred.AckFloor.Stream+1
			cfg.Metadata[continuesKey] = pred.Name
			where = fmt.Sprintf("at stream sequence %d, where consumer %s (of a workflow not in the config, on the same subject %s) stopped: a renamed workflow continues, nothing skipped or processed twice",
				pred.AckFloor.Stream+1, pred.Name, wf.Subject)
		}
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return w.ensureConsumer(ctx, st, wf, name, before) // another replica was first
	}
	if err != nil {
		return nil, fmt.Errorf("worker: workflow %s: create consumer %s: %w", wf.Name, name, err)
	}
	if held > 0 {
		// Events published between the two readings only make the count
		// smaller: it never reports an event skipped that is not.
		pending := cons.CachedInfo().NumPending
		if skipped := held - min(held, pending); skipped > 0 {
			cfg.Metadata[skippedKey] = strconv.FormatUint(skipped, 10)
			if updated, err := st.UpdateConsumer(ctx, cfg); err == nil {
				cons = updated
			}
			log.Warn().Str("start", wf.Start).Uint64("skipped", skipped).
				Msg(fmt.Sprintf("new consumer for workflow %s starts %s; the %d event(s) stream %s holds on %s before it are skipped (as start asks): remove start, or set start: all, to process them", wf.Name, where, skipped, st.CachedInfo().Config.Name, wf.Subject))
			return cons, nil
		}
	}
	log.Info().Str("start", wf.Start).Msg("new consumer for workflow " + wf.Name + " starts " + where)
	return cons, nil
}

// Consumer metadata written when a workflow's consumer is created.
const (
	// skippedKey counts the events the stream held on the workflow's
	// subject that its start (new, or a time) skipped; status shows it.
	skippedKey = "skipped"
	// continuesKey names the consumer of the renamed workflow this one
	// continues.
	continuesKey = "continues"
)

// heldOn counts the events st holds on subject filter; 0 when it cannot
// tell.
func heldOn(ctx context.Context, st jetstream.Stream, filter string) uint64 {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// predecessor finds the consumer of a renamed workflow: a kustomer-sync
// workflow consumer of st on exactly wf's subject whose workflow is not
// among workflows. Of several, the one that stopped earliest, so that
// nothing is skipped.
func predecessor(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, workflows []*mapping.Workflow) (*jetstream.ConsumerInfo, bool) {
	var found *jetstream.ConsumerInfo
	_ = eachWorkflowConsumer(ctx, st, func(name string, info *jetstream.ConsumerInfo) {
		c := info.Config
		if c.FilterSubject != wf.Subject || len(c.FilterSubjects) > 0 {
			return
		}
		if slices.ContainsFunc(workflows, func(w *mapping.Workflow) bool { return w.Name == name }) {
			return
		}
		if found == nil || info.AckFloor.Stream < found.AckFloor.Stream {
			found = info
		}
	})
	return found, found != nil
}

// flow is one workflow's consumer and its runtime state.
type flow struct {
	wf           *mapping.Workflow
	consumerName string
	cons         jetstream.Consumer
	breaker      *loop.Breaker
	slots        chan struct{} // events in flight; a full channel stops fetching
	opened       chan struct{} // signalled when the breaker opens
	// running is closed while the breaker is closed, and replaced by an
	// open one when it opens: the fetch loop and the events held during a
	// pause wait on it.
	runningMu sync.Mutex
	running   chan struct{}
	// draining is closed when the fetch loop stops (the worker stopping):
	// held events give up then. Set by the fetch loop.
	draining <-chan struct{}
	bulk     *batcher // set in bulk mode
	// runner runs an event's items in per-item mode: one per workflow.
	runner *loop.Runner
	// goroutines runs the events and their Loop workers, set while the
	// fetch loop runs: a pool without a limit, whose goroutines stay for
	// the next function once theirs returns, so an event or a Loop worker
	// starts on a stack already grown to what a Kustomer request and a
	// JetStream publish need.
	goroutines *pool.Pool
	log        zerolog.Logger

	stateMu sync.Mutex
	paused  bool
	reason  string    // why it paused; empty while running
	since   time.Time // when it last started, paused or resumed
	// credentials: paused because Kustomer rejected the API key or role.
	credentials bool
	// storeReason says why the workflow is paused because an outcome
	// cannot be stored; empty otherwise (see persist).
	storeReason string
	// onStorePause is told when such a pause starts and ends (metrics).
	onStorePause func(paused bool)
}

// whenRunning returns a channel closed once the workflow runs (at once
// when it is not paused).
func (f *flow) whenRunning() <-chan struct{} {
	f.runningMu.Lock()
	defer f.runningMu.Unlock()
	return f.running
}

func (f *flow) setRunning(running bool) {
	f.runningMu.Lock()
	defer f.runningMu.Unlock()
	select {
	case <-f.running: // running now
		if !running {
			f.running = make(chan struct{})
		}
	default:
		if running {
			close(f.running)
		}
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// fetchLoop pulls as many events as there are free slots, so a busy workflow
// stops fetching instead of buffering, and hands each to handle.
func (w *Worker) fetchLoop(fetchCtx, workCtx context.Context, f *flow) {
	events := pool.New()
	// inflight counts the events still running: they may hand Loop workers
	// to the pool until they end, so the pool is waited for only after them.
	var inflight sync.WaitGroup
	f.goroutines, f.draining = events, fetchCtx.Done()
	defer func() {
		inflight.Wait()
		events.Wait() // raises an event's panic again
		if f.bulk != nil {
			f.bulk.wait()
		}
	}()
	for fetchCtx.Err() == nil {
		if f.breaker.Open() || f.storeHeld() {
			select {
			case <-f.whenRunning():
			case <-fetchCtx.Done():
				return
			}
			continue
		}
		// Block for one slot, then take whatever else is free.
		select {
		case f.slots <- struct{}{}:
		case <-fetchCtx.Done():
			return
		}
		n := 1
	more:
		for n < cap(f.slots) {
			select {
			case f.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		if f.bulk != nil {
			// A bulk workflow's memory goes with its items: fetch no more
			// events than its bound on items held has room for.
			k := f.bulk.fetchable(fetchCtx, n)
			for range n - max(k, 1) {
				<-f.slots
			}
			if k == 0 {
				<-f.slots
				return
			}
			n = k
		}
		pullCtx, cancelPull := context.WithTimeout(fetchCtx, fetchWait)
		batch, err := f.cons.Fetch(n, jetstream.FetchContext(pullCtx))
		if err != nil {
			cancelPull()
			for range n {
				<-f.slots
			}
			if fetchCtx.Err() == nil {
				f.log.Warn().Err(err).Msg("fetch failed; retrying")
				w.sleep(fetchCtx, time.Second)
			}
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			inflight.Add(1)
			if f.bulk != nil {
				f.bulk.fetchedEvents(1)
			}
			events.Go(func() {
				defer inflight.Done()
				defer func() { <-f.slots }()
				if f.bulk != nil {
					defer f.bulk.handledEvent()
				}
				w.handle(workCtx, f, msg)
			})
		}
		cancelPull()
		for range n - got {
			<-f.slots
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) && fetchCtx.Err() == nil {
			f.log.Debug().Err(err).Msg("fetch ended")
		}
	}
}

// probeLoop probes Kustomer each time the workflow pauses, until it resumes.
func (w *Worker) probeLoop(ctx context.Context, f *flow) {
	for {
		select {
		case <-f.opened:
			f.breaker.Probe(ctx, w.probe)
		case <-ctx.Done():
			return
		}
	}
}

// signal wakes whoever waits on c without blocking; c has room for one.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (w *Worker) sleep(ctx context.Context, d time.Duration) {
	t := w.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
	case <-ctx.Done():
	}
}

// probe checks whether Kustomer answers, spending one rate unit: an
// authenticated look-up of an externalId that does not exist. Kustomer's own
// 404 (or a 200) means healthy, and so does a 429: it is Kustomer rationing
// the org, which the limiter handles. Anything else, including a 404 that is
// not Kustomer's, is a failure.
func (w *Worker) probe(ctx context.Context) error {
	if err := w.limiter.Wait(ctx); err != nil {
		return err
	}
	_, err := w.kustomer.CustomerByExternalID(ctx, "kustomer-sync-probe")
	var ke *kustomer.Error
	if err == nil || kustomer.IsNotFound(err) || (errors.As(err, &ke) && ke.StatusCode == http.StatusTooManyRequests) {
		return nil
	}
	return err
}

// probeAtStart probes Kustomer once before anything is fetched. If the
// deployment is wrong — a systemic answer (a wrong key, a base URL that is
// not Kustomer's API) or no answer at all (an unreachable host) — every
// workflow is paused: events stay in the stream instead of each being tried
// and dead-lettered, and the probe loop resumes the workflows as soon as
// Kustomer answers. A transient answer (5xx) is left to the breaker, as it
// would be mid-run.
func (w *Worker) probeAtStart(ctx context.Context) {
	err := w.probe(ctx)
	if err == nil {
		w.log.Info().Msg("Kustomer answered the start probe")
		return
	}
	if ctx.Err() != nil {
		return
	}
	var ke *kustomer.Error
	d := kustomerDecision(err)
	if unreachable := errors.As(err, &ke) && ke.StatusCode == 0; !unreachable && !errors.Is(d, &loop.PauseError{}) {
		w.log.Warn().Err(err).Str("class", decisionName(d)).Msg("Kustomer failed the start probe with a transient error; consuming anyway")
		return
	}
	w.log.Error().Err(err).Str("class", decisionName(d)).Int("workflows", len(w.flows)).
		Msg("Kustomer failed the start probe (check the base URL, the API key and the network): every workflow stays paused and probes until it answers")
	for _, f := range w.flows {
		f.breaker.TripWith("start probe failed: "+err.Error(), err)
	}
}

func seqText(n uint64) string { return strconv.FormatUint(n, 10) }
