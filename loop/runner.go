package loop

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sourcegraph/conc/panics"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// Defaults of [Config].
const ConcurrencyDefault = 4

// Config configures a [Runner]. Zero fields take their defaults; Limiter is
// required.
type Config struct {
	// Concurrency is how many items of one Run may be in an attempt at once
	// (default ConcurrencyDefault). The bound is never exceeded; an item
	// waiting for its next attempt does not count against it.
	Concurrency int
	// Policy is the retry policy for retryable failures.
	Policy Policy
	// Limiter is the process's rate budget; every attempt waits on it first.
	Limiter *Limiter
	// Breaker, if set, is the workflow's breaker: every outcome is recorded
	// on it, and while it is open the Run stops and reports unfinished items
	// as paused.
	Breaker *Breaker
	// Clock defaults to SystemClock().
	Clock Clock
	// Rand returns the jitter source, uniform in [0,1); default
	// math/rand/v2.Float64.
	Rand func() float64
	// Go, if set, runs a Run's workers instead of new goroutines: the
	// worker hands them to goroutines of earlier events, whose stacks have
	// already grown to what an attempt needs. It must run fn
	// concurrently; a panic in fn is caught and raised again by Run.
	Go func(fn func())
}

func (c Config) validate() error {
	switch {
	case c.Limiter == nil:
		return errors.New("loop: Config.Limiter is required")
	case c.Concurrency < 0:
		return errors.New("loop: Config.Concurrency must not be negative")
	}
	return c.Policy.validate()
}

// Runner runs the items of one event: each item's attempts wait on the
// Limiter, run with bounded concurrency, and retry by the Policy. Create one
// per workflow with New; a Runner is safe for concurrent use, and Runs of
// one Runner (or of many) share its Limiter and Breaker.
type Runner struct {
	cfg Config
}

// New returns a Runner for cfg.
func New(cfg Config) (*Runner, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Concurrency = cmp.Or(cfg.Concurrency, ConcurrencyDefault)
	cfg.Policy = cfg.Policy.withDefaults()
	cfg.Clock = cmp.Or[Clock](cfg.Clock, SystemClock())
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Runner{cfg: cfg}, nil
}

// Task makes one attempt at one item: index is the item's index in the event
// (as given to Run), attempt counts from 1. A failed attempt returns its
// decision: [RetryAfter], [Throttled], [Permanent], [Pause] or [Unknown]
// (an error that holds none counts as permanent). ctx is canceled only
// when Run's ctx is: an attempt in flight when the workflow pauses finishes,
// so a customer created meanwhile is reported as created.
type Task func(ctx context.Context, index, attempt int) (Result, error)

// Result is what a successful attempt produced.
type Result struct {
	CustomerID string
	// Attributes is the customer as JSON (a JSON object), passed through
	// to the Outcome.
	Attributes json.RawMessage
	// AlreadyCreated: the customer existed already (found by a look-up
	// after an earlier unknown outcome); nothing was created twice.
	AlreadyCreated bool
	// Status, when set, is the item's success outcome ([outcome.Updated],
	// [outcome.Skipped]); it overrides Created and AlreadyCreated.
	Status outcome.Outcome
}

// Outcome is the end of one item. The failure fields describe the item's
// last failure, if any (a created item may have failed before).
type Outcome struct {
	Index int
	// Status is how the item ended: [outcome.Created],
	// [outcome.AlreadyCreated], [outcome.Permanent] (a permanent error),
	// [outcome.Exhausted] (MaxAttempts spent on retries), [outcome.Paused]
	// (not finished because the workflow paused: its attempts are not
	// spent, the event should come back later and the item start again
	// from attempt 1) or [outcome.Canceled] (not finished because Run's
	// ctx ended).
	Status     outcome.Outcome
	CustomerID string
	Attributes json.RawMessage
	Attempts   int // attempts made in this Run
	// Err is the last failure as the Task returned it, decision included:
	// ask it with errors.Is and errors.As. nil once the item is created.
	Err          error
	FirstFailure time.Time
	LastFailure  time.Time
}

// Report is the outcome of a Run.
type Report struct {
	// Outcomes holds one Outcome per index given to Run, in the same order.
	Outcomes []Outcome
	// Paused: the run stopped because the workflow paused (a systemic
	// failure or an open breaker); some items may be [outcome.Paused].
	Paused bool
}

// Failed returns the outcomes that failed: [outcome.Permanent] and
// [outcome.Exhausted].
func (r Report) Failed() []Outcome { return r.filter(outcome.Outcome.Failed) }

// Created returns the outcomes that have a customer: [outcome.Created],
// [outcome.AlreadyCreated], [outcome.Updated] and [outcome.Skipped].
func (r Report) Created() []Outcome { return r.filter(outcome.Outcome.Succeeded) }

func (r Report) filter(keep func(outcome.Outcome) bool) []Outcome {
	var out []Outcome
	for _, o := range r.Outcomes {
		if keep(o.Status) {
			out = append(out, o)
		}
	}
	return out
}

// Run runs task for every item of indexes (a replay may run a subset of an
// event) and returns when every item has an outcome. At most Concurrency
// attempts are in flight; an item waiting for its retry holds no slot. A
// [Permanent] decision fails the item at once; [RetryAfter], [Throttled]
// and [Unknown] retry it after the longer of Policy.Backoff and the
// decision's delay, up to MaxAttempts; [Pause], or the Breaker opening,
// stops the Run: attempts in flight finish, everything else becomes
// [outcome.Paused]. If ctx
// ends, in-flight attempts see it and unfinished items become
// [outcome.Canceled]. A panic in task is re-raised by Run after every other
// goroutine has ended. Every goroutine Run starts has ended when it returns.
func (r *Runner) Run(ctx context.Context, indexes []int, task Task) Report {
	report := Report{Outcomes: make([]Outcome, len(indexes))}
	for i, idx := range indexes {
		report.Outcomes[i].Index = idx
	}
	if len(indexes) == 0 {
		return report
	}
	s := &run{cfg: r.cfg, indexes: indexes, task: task, outcomes: report.Outcomes}
	report.Paused = s.run(ctx)
	return report
}

type stopReason int

const (
	running stopReason = iota
	stopPaused
	stopCanceled
	stopPanicked
)

// job is one attempt of the item at position pos.
type job struct{ pos, attempt int }

type attemptResult struct {
	job
	res      Result
	err      error
	skipped  bool // the attempt was not made: the run stopped while it waited
	panicked bool
}

// run is the state of one Run, owned by the scheduling goroutine.
type run struct {
	cfg      Config
	indexes  []int
	task     Task
	outcomes []Outcome

	stop     stopReason
	inFlight int
	finished int
	next     int // position of the next item not yet attempted
	waiting  retryQueue
	due      []job
}

// run schedules until every item has an outcome; it reports whether the
// run paused.
func (s *run) run(parent context.Context) bool {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// waitCtx ends limiter waits when the run stops, without canceling
	// attempts in flight.
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()

	var opened <-chan struct{}
	if s.cfg.Breaker != nil {
		opened = s.cfg.Breaker.openedChan()
	}
	ready := make(chan job)
	results := make(chan attemptResult, s.cfg.Concurrency)
	var workers sync.WaitGroup
	var caught panics.Catcher
	start := s.cfg.Go
	if start == nil {
		start = func(fn func()) { go fn() }
	}
	for range min(s.cfg.Concurrency, len(s.indexes)) {
		workers.Add(1)
		start(func() {
			defer workers.Done()
			caught.Try(func() { s.work(ctx, waitCtx, ready, results) })
		})
	}

	clock := s.cfg.Clock
	var retryTimer Timer
	var retryAt time.Time
	defer func() {
		if retryTimer != nil {
			retryTimer.Stop()
		}
	}()

	halt := func(why stopReason) {
		if s.stop == running {
			s.stop = why
			stopWaiting()
			if why != stopPaused {
				cancel()
			}
		}
	}
	for {
		if s.stop == running {
			select {
			case <-ctx.Done():
				halt(stopCanceled)
			case <-opened:
				halt(stopPaused)
			default:
			}
		}
		if s.stop != running && s.inFlight == 0 || s.stop == running && s.finished == len(s.indexes) {
			break
		}

		var send chan<- job
		var nextJob job
		var retryC <-chan time.Time
		if s.stop == running {
			s.promoteDue(clock.Now())
			switch {
			case len(s.due) > 0:
				send, nextJob = ready, s.due[0]
			case s.next < len(s.indexes):
				send, nextJob = ready, job{pos: s.next, attempt: 1}
			}
			if len(s.waiting) > 0 {
				if at := s.waiting[0].at; retryTimer == nil || !at.Equal(retryAt) {
					if retryTimer != nil {
						retryTimer.Stop()
					}
					retryTimer, retryAt = clock.NewTimer(at.Sub(clock.Now())), at
				}
				retryC = retryTimer.C()
			}
		}

		select {
		case send <- nextJob:
			s.inFlight++
			if len(s.due) > 0 {
				s.due = s.due[1:]
			} else {
				s.next++
			}
		case res := <-results:
			s.inFlight--
			if res.panicked {
				halt(stopPanicked)
				continue
			}
			if why := s.record(ctx, res); why != running {
				halt(why)
			}
		case <-retryC:
			retryTimer = nil
		case <-ctx.Done():
			halt(stopCanceled)
		case <-opened:
			halt(stopPaused)
		}
	}
	close(ready)
	workers.Wait()
	caught.Repanic() // a task's panic

	unfinished := outcome.Paused
	if s.stop == stopCanceled {
		unfinished = outcome.Canceled
	}
	for i := range s.outcomes {
		if s.outcomes[i].Status == outcome.None {
			s.outcomes[i].Status = unfinished
		}
	}
	return s.stop == stopPaused
}

// work is one of the Concurrency workers: it makes the attempts it is given.
func (s *run) work(ctx, waitCtx context.Context, ready <-chan job, results chan<- attemptResult) {
	for j := range ready {
		res := attemptResult{job: j, panicked: true}
		func() {
			// Deferred so that the scheduler hears of a panicking task
			// before the panic unwinds into the pool.
			defer func() { results <- res }()
			if s.cfg.Limiter.Wait(waitCtx) != nil || s.cfg.Breaker != nil && s.cfg.Breaker.Open() {
				res.skipped, res.panicked = true, false
				return
			}
			res.res, res.err = s.task(ctx, s.indexes[j.pos], j.attempt)
			res.panicked = false
		}()
	}
}

// record files the result of one attempt and says whether the run must stop.
func (s *run) record(ctx context.Context, res attemptResult) stopReason {
	if res.skipped {
		return running // the run is stopping; the item stays unfinished
	}
	o := &s.outcomes[res.pos]
	o.Attempts = res.attempt
	if res.err == nil {
		o.Status = outcome.Created
		if res.res.AlreadyCreated {
			o.Status = outcome.AlreadyCreated
		}
		if res.res.Status != outcome.None {
			o.Status = res.res.Status
		}
		o.CustomerID, o.Attributes = res.res.CustomerID, res.res.Attributes
		o.Err = nil
		s.finished++
		if s.cfg.Breaker != nil {
			s.cfg.Breaker.Record(nil)
		}
		return running
	}
	step := s.cfg.Policy.Next(res.err, res.attempt, s.cfg.Rand())
	if ctx.Err() != nil && (errors.Is(res.err, ctx.Err()) || step.transient()) {
		// The attempt was cut short by cancellation, not by Kustomer.
		o.Err = res.err
		o.Status = outcome.Canceled
		s.finished++
		return running
	}

	now := s.cfg.Clock.Now()
	if step.Kind == StepLater {
		// Not attempted: no failure, the attempt is not spent; it is made
		// once what held the item lets go.
		o.Attempts = res.attempt - 1
		if s.stop != running {
			return running
		}
		heap.Push(&s.waiting, retry{at: now.Add(step.Delay), job: job{pos: res.pos, attempt: res.attempt}})
		return running
	}
	o.Err = decided(res.err)
	if o.FirstFailure.IsZero() {
		o.FirstFailure = now
	}
	o.LastFailure = now
	if s.cfg.Breaker != nil {
		s.cfg.Breaker.Record(res.err)
	}

	switch step.Kind {
	case StepPause:
		return stopPaused // the item stays unfinished and becomes paused
	case StepExhausted:
		o.Status = outcome.Exhausted
		s.finished++
		return running
	case StepRetry:
		if s.stop != running {
			return running // paused or canceled while this attempt ran
		}
		heap.Push(&s.waiting, retry{at: now.Add(step.Delay), job: job{pos: res.pos, attempt: res.attempt + 1}})
		return running
	default:
		o.Status = outcome.Permanent
		s.finished++
		return running
	}
}

// promoteDue moves the retries due by now to the due list, oldest first.
func (s *run) promoteDue(now time.Time) {
	for len(s.waiting) > 0 && !s.waiting[0].at.After(now) {
		s.due = append(s.due, heap.Pop(&s.waiting).(retry).job)
	}
}

type retry struct {
	at time.Time
	job
}

// retryQueue is a min-heap of retries by due time.
type retryQueue []retry

func (q retryQueue) Len() int           { return len(q) }
func (q retryQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q retryQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *retryQueue) Push(x any)        { *q = append(*q, x.(retry)) }
func (q *retryQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
