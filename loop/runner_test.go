package loop_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/panics"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// bundle is what most runner tests need: a fake clock, a limiter that never
// makes anyone wait unless a test says so, and a runner built on them.
type bundle struct {
	clock *looptest.FakeClock
	lim   *loop.Limiter
}

func setup(t testing.TB) *bundle {
	t.Helper()
	clock := looptest.NewFakeClock(time.Time{})
	return &bundle{clock: clock, lim: newLimiter(t, clock, 60_000_000, 1_000_000)}
}

func (b *bundle) runner(t testing.TB, cfg loop.Config) *loop.Runner {
	t.Helper()
	cfg.Clock = b.clock
	if cfg.Limiter == nil {
		cfg.Limiter = b.lim
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 } // no jitter
	}
	r, err := loop.New(cfg)
	require.NoError(t, err)
	return r
}

// drive lets fake time pass by itself until the test ends.
// runTimed runs item 0 through r, the clock driven, with attempt (its
// first argument counts the calls so far, this one included; its second is
// the attempt's number). It answers the report, and when each call began
// from the clock's start.
func (b *bundle) runTimed(t *testing.T, r *loop.Runner, attempt func(call, n int) (loop.Result, error)) (loop.Report, []time.Duration) {
	t.Helper()
	start := b.clock.Now()
	var mu sync.Mutex
	var at []time.Duration
	b.drive(t)
	rep := r.Run(t.Context(), []int{0}, func(_ context.Context, _, n int) (loop.Result, error) {
		mu.Lock()
		at = append(at, b.clock.Now().Sub(start))
		call := len(at)
		mu.Unlock()
		return attempt(call, n)
	})
	mu.Lock()
	defer mu.Unlock()
	return rep, at
}

func (b *bundle) drive(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg conc.WaitGroup
	wg.Go(func() { b.clock.Drive(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func created(_ context.Context, index, _ int) (loop.Result, error) {
	return loop.Result{CustomerID: string(rune('a' + index))}, nil
}

func statuses(rep loop.Report) []outcome.Outcome {
	var out []outcome.Outcome
	for _, o := range rep.Outcomes {
		out = append(out, o.Status)
	}
	return out
}

func TestRunnerReportsOneOutcomePerIndexInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Concurrency: 3})
	rep := r.Run(t.Context(), []int{7, 2, 5}, func(ctx context.Context, index, attempt int) (loop.Result, error) {
		switch index {
		case 2:
			return loop.Result{}, permanent()
		case 5:
			return loop.Result{CustomerID: "c5", AlreadyCreated: true}, nil
		}
		return loop.Result{CustomerID: "c7", Attributes: json.RawMessage(`{"name":"Ada"}`)}, nil
	})
	require.False(t, rep.Paused)
	require.Len(t, rep.Outcomes, 3)
	require.Equal(t, []int{7, 2, 5}, []int{rep.Outcomes[0].Index, rep.Outcomes[1].Index, rep.Outcomes[2].Index})
	require.Equal(t, []outcome.Outcome{outcome.Created, outcome.Permanent, outcome.AlreadyCreated}, statuses(rep))
	require.JSONEq(t, `{"name":"Ada"}`, string(rep.Outcomes[0].Attributes))
	require.Len(t, rep.Created(), 2)
	require.Len(t, rep.Failed(), 1)
	require.Equal(t, 2, rep.Failed()[0].Index)
	require.Empty(t, r.Run(t.Context(), nil, created).Outcomes)
}

func TestRunnerNeverExceedsItsConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const bound, items = 3, 20
	r := b.runner(t, loop.Config{Concurrency: bound})
	var inFlight, peak atomic.Int32
	release := make(chan struct{})
	var wg conc.WaitGroup
	var rep loop.Report
	wg.Go(func() {
		rep = r.Run(t.Context(), indexes(items), func(ctx context.Context, index, attempt int) (loop.Result, error) {
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			inFlight.Add(-1)
			return loop.Result{CustomerID: "c"}, nil
		})
	})
	for left := items; left > 0; left-- {
		require.Eventually(t, func() bool { return inFlight.Load() == int32(min(bound, left)) }, 5*time.Second, time.Millisecond)
		release <- struct{}{}
	}
	wg.Wait()
	require.EqualValues(t, bound, peak.Load())
	require.Len(t, rep.Created(), items)
}

func TestRunnersShareOneLimiter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lim := newLimiter(t, b.clock, 60, 1) // one request a second for the whole process
	r1 := b.runner(t, loop.Config{Concurrency: 3, Limiter: lim})
	r2 := b.runner(t, loop.Config{Concurrency: 3, Limiter: lim})
	var calls atomic.Int32
	task := func(context.Context, int, int) (loop.Result, error) {
		calls.Add(1)
		return loop.Result{CustomerID: "c"}, nil
	}
	var wg conc.WaitGroup
	wg.Go(func() { r1.Run(t.Context(), indexes(3), task) })
	wg.Go(func() { r2.Run(t.Context(), indexes(3), task) })

	// Six workers want a token; one gets the burst, five wait their turn.
	clock := b.clock
	clock.BlockUntil(5)
	require.EqualValues(t, 1, calls.Load())
	for want := int32(2); want <= 6; want++ {
		clock.Advance(time.Second)
		require.Eventually(t, func() bool { return calls.Load() == want }, 5*time.Second, time.Millisecond)
		require.EqualValues(t, want, calls.Load(), "one call per second across both runners")
	}
	wg.Wait()
}

func TestRunnerRetriesRetryableFailuresWithGrowingDelays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Policy: loop.Policy{MaxAttempts: 5, InitialDelay: time.Second, Multiplier: 2, Jitter: -1}})
	start := b.clock.Now()
	rep, at := b.runTimed(t, r, func(_, attempt int) (loop.Result, error) {
		if attempt < 4 {
			return loop.Result{}, retryable(503)
		}
		return loop.Result{CustomerID: "c"}, nil
	})
	o := rep.Outcomes[0]
	require.Equal(t, outcome.Created, o.Status)
	require.Equal(t, 4, o.Attempts)
	require.Equal(t, []time.Duration{0, 1 * time.Second, 3 * time.Second, 7 * time.Second}, at)
	require.Equal(t, start, o.FirstFailure)
	require.Equal(t, start.Add(3*time.Second), o.LastFailure)
	require.NoError(t, o.Err)
}

func TestRunnerFailsAnItemWhenItsAttemptsAreExhausted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Policy: loop.Policy{MaxAttempts: 3}})
	b.drive(t)
	var calls atomic.Int32
	rep := r.Run(t.Context(), []int{4}, func(context.Context, int, int) (loop.Result, error) {
		calls.Add(1)
		return loop.Result{}, retryable(503)
	})
	o := rep.Outcomes[0]
	require.Equal(t, outcome.Exhausted, o.Status)
	require.Equal(t, 3, o.Attempts)
	require.EqualValues(t, 3, calls.Load())
	require.ErrorIs(t, o.Err, &loop.RetryError{})
	require.Equal(t, 503, answerOf(o.Err).status)
	require.Equal(t, []loop.Outcome{o}, rep.Failed())
}

func TestRunnerHonoursRetryAfterWhenLongerThanTheBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Policy: loop.Policy{InitialDelay: time.Second, Jitter: -1}})
	start := b.clock.Now()
	var second atomic.Int64
	b.drive(t)
	rep := r.Run(t.Context(), []int{0}, func(_ context.Context, _, attempt int) (loop.Result, error) {
		if attempt == 1 {
			return loop.Result{}, throttled(30 * time.Second)
		}
		second.Store(int64(b.clock.Now().Sub(start)))
		return loop.Result{CustomerID: "c"}, nil
	})
	require.Equal(t, outcome.Created, rep.Outcomes[0].Status)
	require.Equal(t, 30*time.Second, time.Duration(second.Load()))
}

func TestRunnerDoesNotRetryPermanentFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{})
	var calls atomic.Int32
	unclassified := errors.New("mapping: name too long")
	rep := r.Run(t.Context(), []int{0, 1}, func(_ context.Context, index, _ int) (loop.Result, error) {
		calls.Add(1)
		if index == 0 {
			return loop.Result{}, permanent()
		}
		return loop.Result{}, unclassified
	})
	require.EqualValues(t, 2, calls.Load())
	for _, o := range rep.Outcomes {
		require.Equal(t, outcome.Permanent, o.Status, "failed, not exhausted")
		require.Equal(t, 1, o.Attempts)
		require.ErrorIs(t, o.Err, &loop.PermanentError{}, "an error without a decision is permanent")
	}
	require.Equal(t, answerError{status: 400, code: "badparam"}, answerOf(rep.Outcomes[0].Err))
	require.ErrorIs(t, rep.Outcomes[1].Err, unclassified)
}

func TestRunnerA429SeenByOneItemMakesEveryWorkerWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lim := newLimiter(t, b.clock, 60, 1) // tokens at 0s, 1s, 2s...
	r := b.runner(t, loop.Config{Concurrency: 3, Limiter: lim})
	start := b.clock.Now()
	var calls atomic.Int32
	var mu sync.Mutex
	var at []time.Duration
	var wg conc.WaitGroup
	var rep loop.Report
	wg.Go(func() {
		rep = r.Run(t.Context(), indexes(3), func(context.Context, int, int) (loop.Result, error) {
			mu.Lock()
			at = append(at, b.clock.Now().Sub(start))
			mu.Unlock()
			if calls.Add(1) == 1 {
				lim.Observe(loop.Observation{Throttled: true, RetryAfter: 10 * time.Second})
				return loop.Result{}, throttled(10 * time.Second)
			}
			return loop.Result{CustomerID: "c"}, nil
		})
	})
	// Two workers wait for tokens (1s, 2s), the first item for its retry (10s).
	b.clock.BlockUntil(3)
	b.clock.Advance(9 * time.Second)
	// Their tokens came, but the pause holds them: they park again.
	b.clock.BlockUntil(3)
	require.EqualValues(t, 1, calls.Load(), "no worker calls Kustomer during the pause")
	b.clock.Advance(time.Second)
	b.drive(t)
	wg.Wait()
	require.Len(t, rep.Created(), 3)
	require.Equal(t, time.Duration(0), at[0])
	for _, d := range at[1:] {
		require.GreaterOrEqual(t, d, 10*time.Second)
	}
}

func TestRunnerWaitingForARetryHoldsNoSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Concurrency: 1, Policy: loop.Policy{InitialDelay: time.Minute, MaxDelay: time.Minute}})
	secondRan := make(chan time.Time, 1)
	var wg conc.WaitGroup
	var rep loop.Report
	start := b.clock.Now()
	wg.Go(func() {
		rep = r.Run(t.Context(), []int{0, 1}, func(_ context.Context, index, attempt int) (loop.Result, error) {
			if index == 0 && attempt == 1 {
				return loop.Result{}, retryable(503)
			}
			if index == 1 {
				secondRan <- b.clock.Now()
			}
			return loop.Result{CustomerID: "c"}, nil
		})
	})
	// With the only slot free while item 0 waits a minute, item 1 runs now.
	require.Equal(t, start, <-secondRan)
	b.drive(t)
	wg.Wait()
	require.Equal(t, []outcome.Outcome{outcome.Created, outcome.Created}, statuses(rep))
	require.Equal(t, 2, rep.Outcomes[0].Attempts)
}

func TestRunnerPausesOnASystemicFailureWithoutFailingItems(t *testing.T) {
	t.Parallel()
	b := setup(t)
	clock := b.clock
	brk, changes := newBreaker(t, clock, 10)
	r := b.runner(t, loop.Config{Concurrency: 1, Breaker: brk})
	rep := r.Run(t.Context(), indexes(5), func(_ context.Context, index, _ int) (loop.Result, error) {
		if index == 2 {
			return loop.Result{}, systemic()
		}
		return loop.Result{CustomerID: "c"}, nil
	})
	require.True(t, rep.Paused)
	require.True(t, brk.Open())
	require.Equal(t, []bool{true}, changes.get())
	require.Equal(t, []outcome.Outcome{outcome.Created, outcome.Created, outcome.Paused, outcome.Paused, outcome.Paused}, statuses(rep))
	require.ErrorIs(t, rep.Outcomes[2].Err, &loop.PauseError{})
	require.Zero(t, rep.Outcomes[3].Attempts)
	require.Empty(t, rep.Failed())

	// While the breaker is open, a new run starts nothing.
	again := r.Run(t.Context(), indexes(2), func(context.Context, int, int) (loop.Result, error) {
		t.Error("no attempt while the workflow is paused")
		return loop.Result{}, nil
	})
	require.True(t, again.Paused)
	require.Equal(t, []outcome.Outcome{outcome.Paused, outcome.Paused}, statuses(again))

	// A successful probe resumes the workflow.
	done := make(chan struct{})
	go func() {
		defer close(done)
		brk.Probe(t.Context(), func(context.Context) error { return nil })
	}()
	clock.BlockUntil(1)
	clock.AdvanceToNext()
	<-done
	require.False(t, brk.Open())
	require.Len(t, r.Run(t.Context(), indexes(2), created).Created(), 2)
}

func TestRunnerPausesOnASystemicFailureEvenWithoutABreaker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Concurrency: 1})
	rep := r.Run(t.Context(), indexes(3), func(_ context.Context, index, _ int) (loop.Result, error) {
		if index == 0 {
			return loop.Result{}, systemic()
		}
		return loop.Result{CustomerID: "c"}, nil
	})
	require.True(t, rep.Paused)
	require.Equal(t, []outcome.Outcome{outcome.Paused, outcome.Paused, outcome.Paused}, statuses(rep))
}

func TestRunnerPausesWhenARunOfTransientFailuresOpensTheBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	brk, _ := newBreaker(t, b.clock, 3)
	r := b.runner(t, loop.Config{Concurrency: 1, Breaker: brk})
	var calls atomic.Int32
	rep := r.Run(t.Context(), indexes(5), func(context.Context, int, int) (loop.Result, error) {
		calls.Add(1)
		return loop.Result{}, retryable(503)
	})
	// Items 0, 1, 2 fail once each (item 0 waits for its retry meanwhile);
	// the third failure in a row opens the breaker and nothing else runs.
	require.True(t, rep.Paused)
	require.EqualValues(t, 3, calls.Load())
	require.Equal(t, []outcome.Outcome{outcome.Paused, outcome.Paused, outcome.Paused, outcome.Paused, outcome.Paused}, statuses(rep))
	require.Equal(t, 1, rep.Outcomes[0].Attempts)
	require.Equal(t, 503, answerOf(rep.Outcomes[0].Err).status)
	require.Empty(t, rep.Failed(), "an outage fails nothing")
}

func TestRunnerLetsAttemptsInFlightFinishWhenTheBreakerOpens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	brk, _ := newBreaker(t, b.clock, 10)
	r := b.runner(t, loop.Config{Concurrency: 2, Breaker: brk})
	slowStarted, finishSlow := make(chan struct{}), make(chan struct{})
	rep := r.Run(t.Context(), indexes(4), func(ctx context.Context, index, _ int) (loop.Result, error) {
		switch index {
		case 0:
			close(slowStarted)
			<-finishSlow
			require.NoError(t, ctx.Err(), "an attempt in flight is not canceled by a pause")
			return loop.Result{CustomerID: "slow"}, nil
		case 1:
			<-slowStarted
			defer close(finishSlow)
			brk.Record(systemic()) // another run of the workflow saw a 401
			return loop.Result{}, retryable(503)
		}
		return loop.Result{CustomerID: "c"}, nil
	})
	require.True(t, rep.Paused)
	require.Equal(t, outcome.Created, rep.Outcomes[0].Status)
	require.Equal(t, "slow", rep.Outcomes[0].CustomerID)
	require.Equal(t, []outcome.Outcome{outcome.Created, outcome.Paused, outcome.Paused, outcome.Paused}, statuses(rep))
}

func TestRunnerMarksUnfinishedItemsCanceledWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Concurrency: 1})
	ctx, cancel := context.WithCancel(t.Context())
	rep := r.Run(ctx, indexes(3), func(ctx context.Context, index, _ int) (loop.Result, error) {
		if index == 0 {
			return loop.Result{CustomerID: "c"}, nil
		}
		cancel()
		<-ctx.Done()
		return loop.Result{}, loop.Unknown(ctx.Err())
	})
	require.False(t, rep.Paused)
	require.Equal(t, []outcome.Outcome{outcome.Created, outcome.Canceled, outcome.Canceled}, statuses(rep))
}

func TestRunnerReraisesAPanicInATask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{Concurrency: 2})
	var recovered any
	func() {
		defer func() { recovered = recover() }()
		r.Run(t.Context(), indexes(4), func(_ context.Context, index, _ int) (loop.Result, error) {
			if index == 1 {
				panic("boom")
			}
			return loop.Result{CustomerID: "c"}, nil
		})
	}()
	// conc re-raises the task's panic with the stack where it happened.
	var p *panics.Recovered
	require.IsType(t, p, recovered)
	require.Equal(t, "boom", recovered.(*panics.Recovered).Value)
	require.Contains(t, string(recovered.(*panics.Recovered).Stack), "TestRunnerReraisesAPanicInATask")
}

func BenchmarkRunnerOverhead(b *testing.B) {
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: 1 << 40, Burst: 1 << 20})
	require.NoError(b, err)
	r, err := loop.New(loop.Config{Concurrency: 4, Limiter: lim})
	require.NoError(b, err)
	items := indexes(100)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		r.Run(ctx, items, created)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/item")
}

// An item another holder has (another replica creating the same item) is
// tried again once the holder lets go: more times than MaxAttempts if need
// be, with no attempt spent, no failure recorded and nothing counted
// towards an outage.
func TestRunnerTriesAnItemHeldElsewhereLaterWithoutSpendingAttemptsOrFailing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	brk, _ := newBreaker(t, b.clock, 2)
	r := b.runner(t, loop.Config{Concurrency: 1, Breaker: brk, Policy: loop.Policy{MaxAttempts: 2, InitialDelay: time.Second}})
	rep, at := b.runTimed(t, r, func(call, attempt int) (loop.Result, error) {
		if call <= 3 {
			require.Equal(t, 1, attempt, "a held item's attempt is not spent")
			return loop.Result{}, loop.Later(10*time.Second, errors.New("held by replica b"))
		}
		return loop.Result{CustomerID: "c"}, nil
	})
	o := rep.Outcomes[0]
	require.Equal(t, outcome.Created, o.Status)
	require.Equal(t, 1, o.Attempts)
	require.Equal(t, []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second}, at, "tried again when the holder's lease ends")
	require.True(t, o.FirstFailure.IsZero(), "being held is no failure")
	require.False(t, rep.Paused, "three holds in a row are no outage (threshold 2)")
	require.False(t, brk.Open())
}
