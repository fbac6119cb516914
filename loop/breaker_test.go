package loop_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// answerError is a test service's refusal of one call, as the edge that
// speaks the service's protocol would report it inside its decision.
type answerError struct {
	status int
	code   string
}

func (e *answerError) Error() string {
	if e.code == "" {
		return fmt.Sprintf("service: %d", e.status)
	}
	return fmt.Sprintf("service: %d %s", e.status, e.code)
}

// answerOf returns the refusal err holds, or the zero answerError.
func answerOf(err error) answerError {
	var ae *answerError
	if errors.As(err, &ae) {
		return *ae
	}
	return answerError{}
}

func retryable(status int) error { return loop.RetryAfter(0, &answerError{status: status}) }

func throttled(d time.Duration) error { return loop.Throttled(d, &answerError{status: 429}) }

func permanent() error { return loop.Permanent(&answerError{status: 400, code: "badparam"}) }

func systemic() error { return loop.Pause(&answerError{status: 401, code: "unauthorized"}) }

type changes struct {
	mu   sync.Mutex
	seen []bool
}

func (c *changes) record(open bool, _ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, open)
}

func (c *changes) get() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.seen...)
}

func newBreaker(t testing.TB, clock loop.Clock, threshold int) (*loop.Breaker, *changes) {
	t.Helper()
	b, err := loop.NewBreaker(loop.BreakerConfig{Threshold: threshold, ProbeInitial: time.Second, ProbeMax: 4 * time.Second, Clock: clock})
	require.NoError(t, err)
	var c changes
	b.OnChange(c.record)
	return b, &c
}

func TestBreakerOpensAfterAThresholdOfTransientFailuresInARow(t *testing.T) {
	t.Parallel()
	b, c := newBreaker(t, looptest.NewFakeClock(time.Time{}), 3)
	b.Record(retryable(503))
	b.Record(retryable(503))
	b.Record(nil) // Kustomer answered: the run starts again
	b.Record(retryable(502))
	b.Record(permanent()) // so did this
	b.Record(retryable(503))
	b.Record(retryable(503))
	require.False(t, b.Open())
	b.Record(retryable(504))
	require.True(t, b.Open())
	require.Contains(t, b.Reason(), "3 transient failures in a row")
	b.Record(retryable(503))
	require.Equal(t, []bool{true}, c.get(), "one change, reported once")
}

func TestBreakerOpensAtOnceOnASystemicFailure(t *testing.T) {
	t.Parallel()
	b, c := newBreaker(t, looptest.NewFakeClock(time.Time{}), 10)
	b.Record(systemic())
	require.True(t, b.Open())
	require.Contains(t, b.Reason(), "systemic")
	require.Equal(t, []bool{true}, c.get())
}

func TestBreakerIgnoresRateLimiting(t *testing.T) {
	t.Parallel()
	b, _ := newBreaker(t, looptest.NewFakeClock(time.Time{}), 2)
	for range 10 {
		b.Record(throttled(0))
	}
	require.False(t, b.Open())
}

func TestBreakerProbeBacksOffAndClosesOnSuccess(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	b, c := newBreaker(t, clock, 1)
	start := clock.Now()
	b.Record(retryable(503))

	var probes []time.Duration
	probe := func(context.Context) error {
		probes = append(probes, clock.Now().Sub(start))
		if len(probes) < 5 {
			return errors.New("still down")
		}
		return nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Probe(t.Context(), probe)
	}()
	for range 5 {
		clock.BlockUntil(1)
		clock.AdvanceToNext()
	}
	<-done
	require.False(t, b.Open())
	// 1s, then doubling to the 4s cap.
	require.Equal(t, []time.Duration{1 * time.Second, 3 * time.Second, 7 * time.Second, 11 * time.Second, 15 * time.Second}, probes)
	require.Equal(t, []bool{true, false}, c.get())
}

func TestBreakerProbeReturnsAtOnceWhenClosedAndWhenContextEnds(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	b, _ := newBreaker(t, clock, 1)
	b.Probe(t.Context(), func(context.Context) error {
		t.Error("a closed breaker needs no probe")
		return nil
	})

	b.Record(systemic())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Probe(ctx, func(context.Context) error { return errors.New("down") })
	}()
	clock.BlockUntil(1)
	cancel()
	<-done
	require.True(t, b.Open())
}
