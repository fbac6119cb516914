package loop_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// limiterOnAFakeClock is a limiter of perMinute and burst on a new fake
// clock.
func limiterOnAFakeClock(t testing.TB, perMinute, burst int) (*looptest.FakeClock, *loop.Limiter) {
	t.Helper()
	clock := looptest.NewFakeClock(time.Time{})
	return clock, newLimiter(t, clock, perMinute, burst)
}

func newLimiter(t testing.TB, clock loop.Clock, perMinute, burst int) *loop.Limiter {
	t.Helper()
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: perMinute, Burst: burst, Clock: clock})
	require.NoError(t, err)
	return lim
}

func TestLimiterWaitSpacesRequestsAtTheRateAfterTheBurst(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 60, 2) // one a second, two at once
	ctx := t.Context()

	require.NoError(t, lim.Wait(ctx))
	require.NoError(t, lim.Wait(ctx))
	done := make(chan error, 1)
	go func() { done <- lim.Wait(ctx) }()
	clock.BlockUntil(1)
	next, _ := clock.NextDeadline()
	require.Equal(t, time.Second, next.Sub(clock.Now()))
	clock.Advance(time.Second)
	require.NoError(t, <-done)
}

func TestLimiterWaitGivesUpWhenContextEnds(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 60, 1)
	require.NoError(t, lim.Wait(t.Context()))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- lim.Wait(ctx) }()
	clock.BlockUntil(1)
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	require.Regexp(t, "^loop: ", err.Error())
}

func TestLimiterA429PausesEveryWaiterUntilRetryAfter(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 60_000, 1000)
	var hooked []time.Time
	lim.OnPause(func(until time.Time) { hooked = append(hooked, until) })

	lim.Observe(loop.Observation{Throttled: true, RetryAfter: 10 * time.Second})
	require.Equal(t, []time.Time{clock.Now().Add(10 * time.Second)}, hooked)

	const waiters = 5
	var passed atomic.Int32
	var wg conc.WaitGroup
	for range waiters {
		wg.Go(func() {
			require.NoError(t, lim.Wait(t.Context()))
			passed.Add(1)
		})
	}
	clock.BlockUntil(waiters)
	clock.Advance(9 * time.Second)
	clock.BlockUntil(waiters) // still parked: nobody may pass before the pause ends
	require.Zero(t, passed.Load())
	clock.Advance(time.Second)
	wg.Wait()
	require.EqualValues(t, waiters, passed.Load())
}

func TestLimiterA429WithoutRetryAfterPausesUntilTheWindowResets(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	reset := clock.Now().Add(42 * time.Second)
	lim.Observe(loop.Observation{Throttled: true, Limit: 1000, Reset: reset})
	require.Equal(t, reset, lim.PausedUntil())

	lim.Observe(loop.Observation{Throttled: true})
	require.Equal(t, reset, lim.PausedUntil(), "a shorter pause does not shorten the running one")
}

func TestLimiterPauseUntilExtendsNeverShortensAndIsNotBroadcast(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	lim.OnPause(func(time.Time) { t.Error("PauseUntil must not run the OnPause hooks") })
	now := clock.Now()
	lim.PauseUntil(now.Add(5 * time.Second))
	lim.PauseUntil(now.Add(2 * time.Second))
	require.Equal(t, now.Add(5*time.Second), lim.PausedUntil())
	lim.PauseUntil(now.Add(7 * time.Second))
	require.Equal(t, now.Add(7*time.Second), lim.PausedUntil())
}

// answer is a successful response's rate-limit headers.
func answer(limit, used int, reset time.Time) loop.Observation {
	return loop.Observation{Limit: limit, Remaining: limit - used, Reset: reset}
}

// take takes n tokens that must be ready at once: on the fake clock a token
// that is not would wait forever, so the guard fails the test instead.
func take(t *testing.T, lim *loop.Limiter, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for range n {
		require.NoError(t, lim.Wait(ctx))
	}
}

func TestLimiterAloneSpendsTheWindowLessTheReserve(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	require.InDelta(t, 1000, lim.PerMinute(), 0.001, "no answer yet: the share")

	lim.Observe(answer(1000, 0, clock.Now().Add(time.Minute)))
	require.InDelta(t, 990, lim.PerMinute(), 0.001, "1000 less a reserve of 10, over the minute left")

	lim.Observe(answer(1000, 500, clock.Now().Add(time.Minute)))
	require.InDelta(t, 490, lim.PerMinute(), 0.001, "490 left over the minute: what was spent before is gone")
}

func TestLimiterMeasuresTheOthersAndLeavesThemTheirPace(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 200)
	reset := clock.Now().Add(time.Minute)
	lim.Observe(answer(1000, 0, reset))

	take(t, lim, 100)
	clock.Advance(10 * time.Second)
	lim.Observe(answer(1000, 150, reset)) // 100 ours, 50 the others': 5 a second
	// 1000 - 10 reserved - 150 used - 5/s × 50 s for the others = 590 over 50 s.
	require.InDelta(t, 708, lim.PerMinute(), 0.001)
}

func TestLimiterCountsNoOthersBeforeATenthOfTheWindow(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 2000, 200)
	reset := clock.Now().Add(time.Minute)
	lim.Observe(answer(1000, 0, reset))

	take(t, lim, 20)
	clock.Advance(5 * time.Second) // a tenth of the default window is 6 s
	lim.Observe(answer(1000, 50, reset))
	require.InDelta(t, (1000-10-50)/55.0*60, lim.PerMinute(), 0.001, "30 spent by others, but too soon to call it a pace")

	clock.Advance(time.Second)
	lim.Observe(answer(1000, 50, reset))
	require.InDelta(t, (1000-10-50-5*54)/54.0*60, lim.PerMinute(), 0.001, "30 in 6 s: 5 a second")
}

func TestLimiterCarriesTheOthersPaceIntoTheNextWindow(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 200)
	reset := clock.Now().Add(time.Minute)
	lim.Observe(answer(1000, 0, reset))
	clock.Advance(10 * time.Second)
	lim.Observe(answer(1000, 100, reset)) // the others: 10 a second
	require.InDelta(t, (1000-10-100-10*50)/50.0*60, lim.PerMinute(), 0.001)

	clock.Advance(50 * time.Second)
	require.InDelta(t, 1000-10-600, lim.PerMinute(), 0.001,
		"a new window before its first answer: the limit less the reserve and the others' minute")

	next := reset.Add(time.Minute)
	lim.Observe(answer(1000, 3, next))
	require.InDelta(t, 1000-10-3-600, lim.PerMinute(), 0.001, "the first answer: the others' pace stands")
	clock.Advance(3 * time.Second)
	lim.Observe(answer(1000, 33, next))
	require.InDelta(t, (1000-10-33-10*57)/57.0*60, lim.PerMinute(), 0.001, "too soon to measure again")
	clock.Advance(3 * time.Second)
	lim.Observe(answer(1000, 33, next))
	require.InDelta(t, (1000-10-33-5*54)/54.0*60, lim.PerMinute(), 0.001, "measured again: 30 in 6 s")
}

func TestLimiterNeverPacesAboveItsShareNorBelowAHundredthOfIt(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	lim.SetShare(500)
	reset := clock.Now().Add(30 * time.Second)
	lim.Observe(answer(1000, 0, reset))
	require.InDelta(t, 500, lim.PerMinute(), 0.001, "990 over half a minute would be 990 a minute each for two replicas")

	clock.Advance(10 * time.Second)
	lim.Observe(answer(1000, 900, reset)) // the others: 90 a second
	require.InDelta(t, 5, lim.PerMinute(), 0.001)
	require.False(t, lim.PausedUntil().After(clock.Now()), "slow, not paused: more than the reserve is left")
}

func TestLimiterWithAShareCountsOnItsSiblingsPacingAlike(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 900, 150)
	lim.SetShare(300) // one of three replicas: a burst of 50
	reset := clock.Now().Add(time.Minute)
	lim.Observe(answer(900, 0, reset))
	require.InDelta(t, (900-9)/3.0, lim.PerMinute(), 0.001, "a third of what is left")

	take(t, lim, 50)
	clock.Advance(10 * time.Second)
	// 50 ours, 100 the two siblings', 30 a foreign client's: the foreign
	// client spends 3 a second, and each replica a third of the rest.
	lim.Observe(answer(900, 180, reset))
	require.InDelta(t, ((900-9-180)/50.0-3)/3*60, lim.PerMinute(), 0.001)
}

func TestLimiterOnlyTheReserveRemainingPausesUntilResetWithoutBroadcast(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	lim.OnPause(func(time.Time) { t.Error("a local pause must not be broadcast") })
	reset := clock.Now().Add(20 * time.Second)
	lim.Observe(answer(1000, 989, reset))
	require.False(t, lim.PausedUntil().After(clock.Now()), "one above the reserve: slow, not paused")
	lim.Observe(answer(1000, 990, reset))
	require.Equal(t, reset, lim.PausedUntil())
}

func TestLimiterIgnoresLateAnswersOfAnEndedWindow(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	reset := clock.Now().Add(time.Second)
	lim.Observe(answer(1000, 0, reset.Add(time.Minute)))
	before := lim.PerMinute()
	lim.Observe(answer(1000, 995, reset)) // sent before the window turned, answered after
	require.InDelta(t, before, lim.PerMinute(), 0.001)
	require.False(t, lim.PausedUntil().After(clock.Now()))
}

func TestLimiterLearnsTheWindowFromSuccessiveResets(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 6000, 300) // 1000 per 10 s
	first := clock.Now().Add(time.Second)
	lim.Observe(answer(1000, 990, first))
	clock.Advance(time.Second)
	second := first.Add(10 * time.Second)
	lim.Observe(answer(1000, 0, second))
	require.InDelta(t, 990/10.0*60, lim.PerMinute(), 0.001)

	clock.Advance(time.Second) // a tenth of a 10-s window: the others are measured
	lim.Observe(answer(1000, 100, second))
	require.InDelta(t, 60, lim.PerMinute(), 0.001, "100 a second for 9 s leave nothing: a hundredth of the share")
}

func TestLimiterLearnsHowMuchResetsAreRoundedUp(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	first := clock.Now().Add(time.Second)
	lim.Observe(answer(1000, 500, first))
	// The next window answers 300 ms before the reported reset: the window
	// really ends 300 ms (at least) before the reset it reports.
	clock.Advance(700 * time.Millisecond)
	second := first.Add(time.Minute)
	lim.Observe(answer(1000, 0, second))
	require.InDelta(t, 990, lim.PerMinute(), 0.001, "990 over the window's real minute, not over the 60.3 s to the reset")

	lim.Observe(answer(1000, 990, second))
	require.Equal(t, second.Add(-300*time.Millisecond), lim.PausedUntil(), "the pause ends with the real window")
}

func TestLimiterWaiterSetToASlowPaceTakesANewTurnAtTheReset(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 600, 1)
	reset := clock.Now().Add(15 * time.Second)
	lim.Observe(answer(600, 580, reset)) // spent before this replica came
	clock.Advance(10 * time.Second)
	lim.Observe(answer(600, 592, reset)) // the others: 1.2 a second, and no more than the reserve is left for this one
	require.InDelta(t, 6, lim.PerMinute(), 0.001, "a hundredth of the share: one every 10 s")
	take(t, lim, 1)

	done := make(chan error, 1)
	go func() { done <- lim.Wait(t.Context()) }()
	clock.BlockUntil(1)
	next, _ := clock.NextDeadline()
	require.Equal(t, reset, next, "the waiter looks again when the window ends, not in 10 s")
	clock.Advance(next.Sub(clock.Now()))
	require.InDelta(t, 600-6-72, lim.PerMinute(), 0.001, "a new window: the limit less the reserve and the others' 72")

	clock.BlockUntil(1)
	next, _ = clock.NextDeadline()
	require.Less(t, next.Sub(clock.Now()), 200*time.Millisecond, "a new turn at the new pace")
	clock.Advance(next.Sub(clock.Now()))
	require.NoError(t, <-done)
}

func TestLimiterWithPacingOffDoesNotPace(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: 1000, Clock: clock, NoPacing: true})
	require.NoError(t, err)
	lim.Observe(answer(1000, 999, clock.Now().Add(time.Second)))
	require.InDelta(t, 1000, lim.PerMinute(), 0.001)
	require.False(t, lim.PausedUntil().After(clock.Now()))
}

func TestLimiterDoesNotPaceOnAResetTooFarAhead(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 1000, 50)
	lim.Observe(answer(1000, 999, clock.Now().Add(time.Hour)))
	require.InDelta(t, 1000, lim.PerMinute(), 0.001)
	require.False(t, lim.PausedUntil().After(clock.Now()))
}

func TestLimiterSetShareChangesTheRate(t *testing.T) {
	t.Parallel()
	clock, lim := limiterOnAFakeClock(t, 600, 1)
	lim.SetShare(60)
	require.InDelta(t, 60, lim.PerMinute(), 0.001)
	lim.SetShare(0)
	require.InDelta(t, 60, lim.PerMinute(), 0.001, "non-positive shares are ignored")

	require.NoError(t, lim.Wait(t.Context()))
	done := make(chan error, 1)
	go func() { done <- lim.Wait(t.Context()) }()
	clock.BlockUntil(1)
	next, _ := clock.NextDeadline()
	require.Equal(t, time.Second, next.Sub(clock.Now()), "60 a minute is one a second")
	clock.Advance(time.Second)
	require.NoError(t, <-done)
}

func BenchmarkLimiterWait(b *testing.B) {
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: 1 << 40, Burst: 1 << 20})
	require.NoError(b, err)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := lim.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
