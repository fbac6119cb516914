package loop_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestDecisionsAreFoundThroughWrappingAndReachTheirCause(t *testing.T) {
	t.Parallel()
	cause := &answerError{status: 503}
	for _, tc := range []struct {
		name     string
		decision error
		target   error
	}{
		{"retry after", loop.RetryAfter(time.Second, cause), &loop.RetryError{}},
		{"throttled", loop.Throttled(time.Second, cause), &loop.RetryError{}},
		{"permanent", loop.Permanent(cause), &loop.PermanentError{}},
		{"pause", loop.Pause(cause), &loop.PauseError{}},
		{"unknown", loop.Unknown(cause), &loop.UnknownError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wrapped := fmt.Errorf("worker: item 3: %w", tc.decision)
			require.ErrorIs(t, wrapped, tc.target)
			require.ErrorIs(t, wrapped, cause, "Unwrap reaches the cause")
			var ae *answerError
			require.ErrorAs(t, wrapped, &ae)
			require.Equal(t, "worker: item 3: service: 503", wrapped.Error(), "a decision adds nothing to the message")
			for _, other := range []error{&loop.RetryError{}, &loop.PermanentError{}, &loop.PauseError{}, &loop.UnknownError{}} {
				if fmt.Sprintf("%T", other) != fmt.Sprintf("%T", tc.target) {
					require.NotErrorIs(t, wrapped, other)
				}
			}
		})
	}
}

func TestDecisionsCarryTheirDelayAndWhetherTheyAreThrottled(t *testing.T) {
	t.Parallel()
	var re *loop.RetryError
	require.ErrorAs(t, fmt.Errorf("x: %w", loop.Throttled(7*time.Second, nil)), &re)
	require.Equal(t, loop.RetryError{Delay: 7 * time.Second, Throttled: true}, *re)
	require.ErrorAs(t, loop.RetryAfter(-time.Second, nil), &re)
	require.Equal(t, loop.RetryError{}, *re, "a negative delay means none")
	require.EqualError(t, loop.RetryAfter(0, nil), "loop: retry")
	require.EqualError(t, loop.Permanent(nil), "loop: permanent failure")
	require.EqualError(t, loop.Pause(nil), "loop: pause")
	require.EqualError(t, loop.Unknown(nil), "loop: outcome unknown")
}

func TestRunnerActsOnTheOutermostDecision(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{})
	var calls atomic.Int32
	rep := r.Run(t.Context(), []int{0}, func(context.Context, int, int) (loop.Result, error) {
		calls.Add(1)
		// A caller that knows better overrides the edge's decision.
		return loop.Result{}, loop.Permanent(fmt.Errorf("worker: %w", retryable(503)))
	})
	require.EqualValues(t, 1, calls.Load())
	require.Equal(t, outcome.Permanent, rep.Outcomes[0].Status, "failed, not exhausted")
	require.ErrorIs(t, rep.Outcomes[0].Err, &loop.RetryError{}, "the inner decision is still there to read")
}

func TestRunnerRetriesAnUnknownOutcomeAfterItsDelayAndCountsItTowardsAnOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	brk, _ := newBreaker(t, b.clock, 2)
	r := b.runner(t, loop.Config{Concurrency: 1, Breaker: brk, Policy: loop.Policy{InitialDelay: time.Second, Jitter: -1}})
	start := b.clock.Now()
	b.drive(t)
	var second atomic.Int64
	rep := r.Run(t.Context(), []int{0}, func(_ context.Context, _, attempt int) (loop.Result, error) {
		if attempt == 1 {
			return loop.Result{}, &loop.UnknownError{Delay: 20 * time.Second, Err: &answerError{status: 504}}
		}
		second.Store(int64(b.clock.Now().Sub(start)))
		return loop.Result{CustomerID: "c"}, nil
	})
	require.Equal(t, outcome.Created, rep.Outcomes[0].Status)
	require.Equal(t, 20*time.Second, time.Duration(second.Load()))

	brk.Record(loop.Unknown(errors.New("no answer")))
	brk.Record(loop.Unknown(errors.New("no answer")))
	require.True(t, brk.Open(), "unknown outcomes in a row are an outage")
}

func TestRunnerNeverRetriesAnErrorWithoutADecision(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.runner(t, loop.Config{})
	bug := errors.New("worker: encode request: unsupported value")
	rep := r.Run(t.Context(), []int{0}, func(context.Context, int, int) (loop.Result, error) {
		return loop.Result{}, bug
	})
	o := rep.Outcomes[0]
	require.Equal(t, outcome.Permanent, o.Status)
	require.Equal(t, 1, o.Attempts)
	require.ErrorIs(t, o.Err, &loop.PermanentError{})
	require.ErrorIs(t, o.Err, bug)
	require.EqualError(t, o.Err, bug.Error())
}
