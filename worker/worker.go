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
	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/subject"
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

// Config configures a Worker. Workflows, Kustomer and Limiter are required.
type Config struct {
	Workflows []*mapping.Workflow
	Kustomer  Kustomer
	// Limiter is the process's one rate budget, shared by every workflow.
	Limiter *loop.Limiter

	Stream     StreamConfig
	DeadLetter dlq.StreamConfig
	RunLog     RunLogConfig
	Ledger     LedgerConfig
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
	// ReplicaID names this replica in the ledger and logs; default host-pid.
	ReplicaID string
	// StartupTimeout bounds how long Start retries creating the streams,
	// buckets and consumers while NATS is unreachable or JetStream has no
	// leader yet; default StartupTimeoutDefault.
	StartupTimeout time.Duration
	// OnStateChange, when set, is called after a workflow pauses or resumes
	// (see [Worker.Workflows]), e.g. to publish the new state at once. It
	// runs on the goroutine that caused the change and must not block.
	OnStateChange func()

	Logger zerolog.Logger
	Clock  loop.Clock // default loop.SystemClock()
}

func (c *Config) validate() error {
	if len(c.Workflows) == 0 {
		return errors.New("worker: no workflows")
	}
	if c.Kustomer == nil {
		return errors.New("worker: Kustomer client is required")
	}
	if c.Limiter == nil {
		return errors.New("worker: Limiter is required")
	}
	seen := map[string]bool{}
	for _, wf := range c.Workflows {
		if seen[wf.Name] {
			return fmt.Errorf("worker: workflow %q defined twice", wf.Name)
		}
		seen[wf.Name] = true
	}
	c.Stream.setDefaults()
	c.ResultsStream = cmp.Or(c.ResultsStream, ResultsStreamDefault)
	if c.AckWait == 0 {
		c.AckWait = AckWaitDefault
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = MaxDeliverDefault
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = MaxEventBytesDefault
	}
	if c.PauseNakDelay == 0 {
		c.PauseNakDelay = PauseNakDelayDefault
	}
	c.ConsumerPrefix = cmp.Or(c.ConsumerPrefix, ConsumerPrefixDefault)
	if c.ReplicaID == "" {
		c.ReplicaID = DefaultReplicaID()
	}
	if c.Clock == nil {
		c.Clock = loop.SystemClock()
	}
	return nil
}

// DefaultReplicaID names a replica by host and process, so replicas on one
// host differ and a restarted process is a new replica.
func DefaultReplicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", cmp.Or(host, "replica"), os.Getpid())
}

// Worker consumes lead events for a set of workflows. Create it with New,
// run it with Start, stop it with Stop. Safe for concurrent use.
type Worker struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	log    zerolog.Logger
	ledger *ledger
	runs   *RunLog
	// replayKey verifies replay headers; an event whose headers do not
	// verify is a new event.
	replayKey *dlq.ReplayKey
	flows     []*flow
	// running holds flows once Start has made them, for readers on other
	// goroutines (Workflows).
	running atomic.Pointer[[]*flow]

	cancel   context.CancelFunc // stops fetching
	hardStop context.CancelFunc // cancels in-flight events
	wg       conc.WaitGroup
	stopOnce sync.Once
}

// New validates cfg and returns a Worker; nothing touches NATS until Start.
func New(nc *nats.Conn, js jetstream.JetStream, cfg Config) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, nc: nc, js: js, log: cfg.Logger}, nil
}

// Start creates or checks the streams, the ledger and one durable consumer
// per workflow — idempotently, so replicas starting together converge, and
// retried with backoff for up to StartupTimeout while NATS is unreachable or
// JetStream has no leader yet — probes Kustomer once, then consumes in the background until
// Stop. When the probe fails (a wrong base URL or key, an unreachable host)
// Start still succeeds, but every workflow starts paused, fetches nothing and
// resumes by itself once a later probe succeeds.
func (w *Worker) Start(ctx context.Context) error {
	if err := RetryStartup(ctx, w.cfg.StartupTimeout, w.setup); err != nil {
		return err
	}
	w.running.Store(&w.flows)
	consumerMetrics.add(w)
	w.probeAtStart(ctx)
	fetchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	workCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel, w.hardStop = cancel, hardStop
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
	w.log.Info().Str("stream", w.cfg.Stream.Name).Int("workflows", len(w.flows)).Str("replica", w.cfg.ReplicaID).Msg("worker started")
	return nil
}

// Stop stops fetching and waits for events in flight until ctx is done; those
// still running then are cancelled and left unacknowledged for redelivery.
// It returns ctx.Err() when the drain did not finish in time.
func (w *Worker) Stop(ctx context.Context) error {
	var err error
	w.stopOnce.Do(func() {
		if w.cancel == nil {
			return
		}
		w.cancel()
		done := make(chan struct{})
		go func() { w.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
			w.hardStop()
			<-done
		}
		w.hardStop()
		consumerMetrics.remove(w)
		// A stopped worker pauses nothing: a gauge left at 1 would report a
		// workflow paused that this process no longer runs (after a reload).
		for _, f := range w.flows {
			metricPaused.DeleteLabelValues(f.wf.Name)
		}
		w.log.Info().Msg("worker stopped")
	})
	return err
}

// setup makes what Start needs; it may run again after a transient failure.
func (w *Worker) setup(ctx context.Context) error {
	w.flows = nil
	// "start: new" begins after what the stream holds before this start, so
	// events published while the streams and consumers are set up still count.
	var before jetstream.StreamState
	if st, err := w.js.Stream(ctx, w.cfg.Stream.Name); err == nil {
		before = st.CachedInfo().State
	}
	st, err := ensureStream(ctx, w.js, w.cfg.Stream.jetstreamConfig(w.cfg.Workflows), workflowNeeds(w.cfg.Workflows))
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
	var results, deadLetters []string
	for _, wf := range w.cfg.Workflows {
		results = append(results, wf.ResultsSubject)
		deadLetters = append(deadLetters, wf.DeadLetterSubject)
	}
	if _, err := ensureStream(ctx, w.js, jetstream.StreamConfig{
		Name:        w.cfg.ResultsStream,
		Description: "kustomer-sync: customers created, for downstream consumers",
		Subjects:    withUncovered([]string{ResultsSubjectsDefault}, results),
		Storage:     jetstream.FileStorage,
		Replicas:    w.cfg.Stream.Replicas,
		MaxAge:      ResultsMaxAgeDefault,
		Duplicates:  10 * time.Minute,
	}, nil); err != nil {
		return err
	}
	dl := w.cfg.DeadLetter
	if dl.Replicas == 0 {
		dl.Replicas = w.cfg.Stream.Replicas
	}
	// A workflow's own dead-letter subject is captured too.
	if len(dl.Subjects) == 0 {
		dl.Subjects = []string{dlq.SubjectsDefault}
	}
	dl.Subjects = withUncovered(dl.Subjects, deadLetters)
	if _, err := dlq.EnsureStream(ctx, w.js, dl); err != nil {
		return explainOverlap(ctx, w.js, jetstream.StreamConfig{Name: cmp.Or(dl.Name, dlq.StreamDefault), Subjects: dl.Subjects}, nil, err)
	}
	rl := w.cfg.RunLog
	if rl.Replicas == 0 {
		rl.Replicas = w.cfg.Stream.Replicas
	}
	if w.runs, err = NewRunLog(ctx, w.js, rl); err != nil {
		return err
	}
	lc := w.cfg.Ledger
	if lc.Replicas == 0 {
		lc.Replicas = w.cfg.Stream.Replicas
	}
	if w.ledger, err = openLedger(ctx, w.js, lc, w.cfg.ReplicaID, w.cfg.Clock.Now); err != nil {
		return err
	}
	if w.replayKey, err = dlq.LoadReplayKey(ctx, w.js, w.cfg.KeyBucket, w.cfg.Stream.Replicas); err != nil {
		return err
	}
	return nil
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
		resumed:      make(chan struct{}, 1),
		opened:       make(chan struct{}, 1),
		log:          w.log.With().Str("workflow", wf.Name).Logger(),
	}
	f.since = w.cfg.Clock.Now()
	if wf.Mode == mapping.ModeBulk {
		if f.bulk, err = w.newBatcher(f); err != nil {
			return nil, err
		}
	}
	metricPaused.WithLabelValues(wf.Name).Set(0)
	breaker.OnChange(func(open bool, reason string) {
		f.setState(open, reason, breaker.Cause(), w.cfg.Clock.Now())
		if open {
			f.log.Warn().Str("reason", reason).Msg("workflow paused: Kustomer is failing systemically; holding events and probing")
			metricPaused.WithLabelValues(wf.Name).Set(1)
			signal(f.opened)
		} else {
			f.log.Info().Msg("workflow resumed")
			metricPaused.WithLabelValues(wf.Name).Set(0)
			signal(f.resumed)
		}
		if w.cfg.OnStateChange != nil {
			w.cfg.OnStateChange()
		}
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
		// Another replica may just have created it: either way, keep its start.
		prev := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		cons, err := st.UpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("worker: workflow %s: update consumer %s: %w", wf.Name, name, err)
		}
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("worker: workflow %s: consumer %s: %w", wf.Name, name, err)
	}
	var where string
	switch wf.Start {
	case mapping.StartAll:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		where = "at the first event the stream holds (start: all)"
	case mapping.StartTime:
		t := wf.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		where = "at the first event published at or after " + t.Format(time.RFC3339) + " (start: " + t.Format(time.RFC3339) + ")"
	default:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, before.LastSeq+1
		where = fmt.Sprintf("at stream sequence %d, with events published from now on (start: new)", before.LastSeq+1)
		if before.Msgs > 0 {
			where += fmt.Sprintf("; the %d event(s) stream %s already holds are not processed: set start: all, or a start time, to process them", before.Msgs, st.CachedInfo().Config.Name)
		}
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return w.ensureConsumer(ctx, st, wf, name, before) // another replica was first
	}
	if err != nil {
		return nil, fmt.Errorf("worker: workflow %s: create consumer %s: %w", wf.Name, name, err)
	}
	log.Info().Str("start", wf.Start).Msg("new consumer for workflow " + wf.Name + " starts " + where)
	return cons, nil
}

// flow is one workflow's consumer and its runtime state.
type flow struct {
	wf           *mapping.Workflow
	consumerName string
	cons         jetstream.Consumer
	breaker      *loop.Breaker
	slots        chan struct{} // events in flight; a full channel stops fetching
	resumed      chan struct{} // signalled when the breaker closes
	opened       chan struct{} // signalled when the breaker opens
	bulk         *batcher      // set in bulk mode
	log          zerolog.Logger

	stateMu sync.Mutex
	paused  bool
	reason  string    // why it paused; empty while running
	since   time.Time // when it last started, paused or resumed
	// credentials: paused because Kustomer rejected the API key or role.
	credentials bool
}

// fetchLoop pulls as many events as there are free slots, so a busy workflow
// stops fetching instead of buffering, and hands each to handle.
func (w *Worker) fetchLoop(fetchCtx, workCtx context.Context, f *flow) {
	var events conc.WaitGroup
	defer func() {
		events.Wait()
		if f.bulk != nil {
			f.bulk.wait()
		}
	}()
	for fetchCtx.Err() == nil {
		if f.breaker.Open() {
			select {
			case <-f.resumed:
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
			events.Go(func() {
				defer func() { <-f.slots }()
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
	if err := w.cfg.Limiter.Wait(ctx); err != nil {
		return err
	}
	_, err := w.cfg.Kustomer.CustomerByExternalID(ctx, "kustomer-sync-probe")
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
	d := decide(err)
	if unreachable := errors.As(err, &ke) && ke.StatusCode == 0; !unreachable && !errors.Is(d, &loop.PauseError{}) {
		w.log.Warn().Err(err).Str("class", decision(d)).Msg("Kustomer failed the start probe with a transient error; consuming anyway")
		return
	}
	w.log.Error().Err(err).Str("class", decision(d)).Int("workflows", len(w.flows)).
		Msg("Kustomer failed the start probe (check the base URL, the API key and the network): every workflow stays paused and probes until it answers")
	for _, f := range w.flows {
		f.breaker.TripWith("start probe failed: "+err.Error(), err)
	}
}

func seqText(n uint64) string { return strconv.FormatUint(n, 10) }
