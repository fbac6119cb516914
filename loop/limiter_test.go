package loop_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

func newLimiter(t testing.TB, clock loop.Clock, perMinute, burst int) *loop.Limiter {
	t.Helper()
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: perMinute, Burst: burst, Clock: clock})
	require.NoError(t, err)
	return lim
}

func TestLimiterWaitSpacesRequestsAtTheRateAfterTheBurst(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 60, 2) // one a second, two at once
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
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 60, 1)
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
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 60_000, 1000)
	var hooked []time.Time
	lim.OnPause(func(until time.Time) { hooked = append(hooked, until) })

	lim.Observe(kustomer.RateLimit{Status: http.StatusTooManyRequests, RetryAfter: 10 * time.Second})
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
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	reset := clock.Now().Add(42 * time.Second)
	lim.Observe(kustomer.RateLimit{Status: http.StatusTooManyRequests, Limit: 1000, Reset: reset})
	require.Equal(t, reset, lim.PausedUntil())

	lim.Observe(kustomer.RateLimit{Status: http.StatusTooManyRequests})
	require.Equal(t, reset, lim.PausedUntil(), "a shorter pause does not shorten the running one")
}

func TestLimiterPauseUntilExtendsNeverShortensAndIsNotBroadcast(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	lim.OnPause(func(time.Time) { t.Error("PauseUntil must not run the OnPause hooks") })
	now := clock.Now()
	lim.PauseUntil(now.Add(5 * time.Second))
	lim.PauseUntil(now.Add(2 * time.Second))
	require.Equal(t, now.Add(5*time.Second), lim.PausedUntil())
	lim.PauseUntil(now.Add(7 * time.Second))
	require.Equal(t, now.Add(7*time.Second), lim.PausedUntil())
}

func TestLimiterSlowsDownWhenRemainingIsLowUntilTheWindowResets(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	reset := clock.Now().Add(30 * time.Second)

	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 500, Reset: reset})
	require.InDelta(t, 1000, lim.PerMinute(), 0.001, "plenty remaining: full rate")

	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 60, Reset: reset})
	require.InDelta(t, 100, lim.PerMinute(), 0.001, "60 left, less a reserve of 10, over half a minute")

	clock.Advance(30 * time.Second)
	require.InDelta(t, 1000, lim.PerMinute(), 0.001, "the window reset")
}

func TestLimiterSlowDownTakesOnlyThisReplicasShareOfWhatRemains(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	lim.SetShare(500)
	require.InDelta(t, 500, lim.PerMinute(), 0.001)

	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 70, Reset: clock.Now().Add(30 * time.Second)})
	require.InDelta(t, 60, lim.PerMinute(), 0.001, "half of 70 left, less the reserve, over half a minute")
}

func TestLimiterOnlyTheReserveRemainingPausesUntilResetWithoutBroadcast(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	lim.OnPause(func(time.Time) { t.Error("a local pause must not be broadcast") })
	reset := clock.Now().Add(20 * time.Second)
	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 11, Reset: reset})
	require.False(t, lim.PausedUntil().After(clock.Now()), "one above the reserve: slow, not paused")
	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 10, Reset: reset})
	require.Equal(t, reset, lim.PausedUntil())
}

func TestLimiterReturnsToFullRateWhenANewWindowReportsPlenty(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 1000, 50)
	reset := clock.Now().Add(30 * time.Second)
	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 60, Reset: reset})
	require.Less(t, lim.PerMinute(), 1000.0)
	// The reported reset was rounded up; the next window has begun already.
	lim.Observe(kustomer.RateLimit{Status: 201, Limit: 1000, Remaining: 999, Reset: reset.Add(time.Minute)})
	require.InDelta(t, 1000, lim.PerMinute(), 0.001)
}

func TestLimiterSetShareChangesTheRate(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	lim := newLimiter(t, clock, 600, 1)
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
