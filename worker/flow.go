package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc/pool"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

func (w *Worker) newFlow(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, before jetstream.StreamState) (*flow, error) {
	name := w.cfg.ConsumerPrefix + wf.Name
	cons, err := leads.EnsureConsumer(ctx, st, wf, leads.ConsumerConfig{
		Name: name, AckWait: w.cfg.AckWait, MaxDeliver: w.cfg.MaxDeliver, Workflows: w.cfg.Workflows,
	}, before, w.log)
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
		status:       replica.NewWorkflowTracker(wf.Name, name, wf.Subject, w.cfg.Clock.Now()),
	}
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
	w.metrics.Paused.WithLabelValues(wf.Name).Set(0)
	f.onStorePause = func(paused bool) {
		if paused || !f.breaker.Open() {
			w.metrics.Paused.WithLabelValues(wf.Name).Set(map[bool]float64{true: 1, false: 0}[paused])
		}
	}
	breaker.OnChange(func(open bool, reason string) {
		f.status.SetPaused(open, reason, credentialsRejected(breaker.Cause()), w.cfg.Clock.Now())
		f.setRunning(!open && !f.status.StoreHeld())
		if open {
			f.log.Warn().Str("reason", reason).Msg("workflow paused: Kustomer is failing systemically; holding events and probing")
			w.metrics.Paused.WithLabelValues(wf.Name).Set(1)
			signal(f.opened)
		} else {
			f.log.Info().Msg("workflow resumed")
			w.metrics.Paused.WithLabelValues(wf.Name).Set(0)
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

	// status is what the replica's heartbeat says of the workflow: running,
	// paused on Kustomer (the breaker) or on a store (see persist).
	status *replica.WorkflowTracker
	// onStorePause is told when a store pause starts and ends (metrics).
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
		if f.breaker.Open() || f.status.StoreHeld() {
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
		w.log.Warn().Err(err).Str("class", loop.DecisionName(d)).Msg("Kustomer failed the start probe with a transient error; consuming anyway")
		return
	}
	w.log.Error().Err(err).Str("class", loop.DecisionName(d)).Int("workflows", len(w.flows)).
		Msg("Kustomer failed the start probe (check the base URL, the API key and the network): every workflow stays paused and probes until it answers")
	for _, f := range w.flows {
		f.breaker.TripWith("start probe failed: "+err.Error(), err)
	}
}
