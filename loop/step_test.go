package loop_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

func TestNextDecidesEveryKindOfAttempt(t *testing.T) {
	t.Parallel()
	p := loop.Policy{MaxAttempts: 3, InitialDelay: time.Second, MaxDelay: time.Minute, Multiplier: 2, Jitter: -1}
	cause := errors.New("kustomer: create: 503")
	for _, tc := range []struct {
		name    string
		err     error
		attempt int
		want    loop.Step
	}{
		{"success", nil, 1, loop.Step{Kind: loop.StepDone}},
		{"retry: the backoff", loop.RetryAfter(0, cause), 1, loop.Step{Kind: loop.StepRetry, Delay: time.Second}},
		{"retry: the backoff grows", loop.RetryAfter(0, cause), 2, loop.Step{Kind: loop.StepRetry, Delay: 2 * time.Second}},
		{"retry: a longer Retry-After wins", loop.RetryAfter(30*time.Second, cause), 1, loop.Step{Kind: loop.StepRetry, Delay: 30 * time.Second}},
		{"retry: a shorter Retry-After loses", loop.RetryAfter(time.Millisecond, cause), 2, loop.Step{Kind: loop.StepRetry, Delay: 2 * time.Second}},
		{"retry: the last attempt exhausts", loop.RetryAfter(0, cause), 3, loop.Step{Kind: loop.StepExhausted}},
		{"throttled retries", loop.Throttled(5*time.Second, cause), 1, loop.Step{Kind: loop.StepRetry, Delay: 5 * time.Second}},
		{"throttled exhausts", loop.Throttled(5*time.Second, cause), 3, loop.Step{Kind: loop.StepExhausted}},
		{"unknown retries", loop.Unknown(cause), 1, loop.Step{Kind: loop.StepRetry, Delay: time.Second}},
		{"unknown with a delay", &loop.UnknownError{Delay: 9 * time.Second, Err: cause}, 1, loop.Step{Kind: loop.StepRetry, Delay: 9 * time.Second}},
		{"unknown exhausts", loop.Unknown(cause), 3, loop.Step{Kind: loop.StepExhausted}},
		{"later: its delay", loop.Later(10*time.Second, cause), 3, loop.Step{Kind: loop.StepLater, Delay: 10 * time.Second}},
		{"later: never sooner than InitialDelay", loop.Later(0, cause), 1, loop.Step{Kind: loop.StepLater, Delay: time.Second}},
		{"later never exhausts", loop.Later(time.Second, cause), 99, loop.Step{Kind: loop.StepLater, Delay: time.Second}},
		{"pause", loop.Pause(cause), 1, loop.Step{Kind: loop.StepPause}},
		{"pause on the last attempt", loop.Pause(cause), 3, loop.Step{Kind: loop.StepPause}},
		{"permanent", loop.Permanent(cause), 1, loop.Step{Kind: loop.StepPermanent}},
		{"no decision is permanent", cause, 1, loop.Step{Kind: loop.StepPermanent}},
		{"a wrapped decision counts", fmt.Errorf("worker: item 3: %w", loop.RetryAfter(0, cause)), 1, loop.Step{Kind: loop.StepRetry, Delay: time.Second}},
		{"the outermost decision counts", loop.Permanent(loop.RetryAfter(0, cause)), 1, loop.Step{Kind: loop.StepPermanent}},
	} {
		require.Equal(t, tc.want, p.Next(tc.err, tc.attempt, 0.5), tc.name)
	}
}

func TestNextSpreadsTheRetryDelayByJitterAndTakesTheDefaults(t *testing.T) {
	t.Parallel()
	var p loop.Policy // MaxAttemptsDefault, InitialDelayDefault, JitterDefault
	err := loop.RetryAfter(0, errors.New("503"))
	require.Equal(t, loop.Step{Kind: loop.StepRetry, Delay: p.Backoff(1, 0)}, p.Next(err, 1, 0))
	require.Less(t, p.Next(err, 1, 0).Delay, p.Next(err, 1, 0.9).Delay, "rnd spreads the delay")
	require.Equal(t, loop.StepRetry, p.Next(err, loop.MaxAttemptsDefault-1, 0.5).Kind)
	require.Equal(t, loop.StepExhausted, p.Next(err, loop.MaxAttemptsDefault, 0.5).Kind)
	require.Equal(t, loop.InitialDelayDefault, p.Next(loop.Later(0, err), 1, 0.5).Delay)
}

func TestStepKindsHaveNames(t *testing.T) {
	t.Parallel()
	var names []string
	for k := loop.StepDone; k <= loop.StepExhausted; k++ {
		names = append(names, k.String())
	}
	require.Equal(t, []string{"done", "retry", "later", "pause", "permanent", "exhausted"}, names)
	require.Equal(t, "unknown", loop.StepKind(42).String())
}

// Next decides after each attempt: here a 503 twice, then a success, under
// a policy of three attempts; a claim held elsewhere is tried later without
// spending an attempt, and a 401 pauses the workflow.
func ExamplePolicy_Next() {
	p := loop.Policy{MaxAttempts: 3, InitialDelay: time.Second, Jitter: -1}
	unavailable := loop.RetryAfter(0, errors.New("kustomer: create: 503 unavailable"))
	for attempt, err := range []error{unavailable, unavailable, nil} {
		step := p.Next(err, attempt+1, 0.5)
		fmt.Println(attempt+1, step.Kind, step.Delay)
	}
	fmt.Println(p.Next(unavailable, 3, 0.5).Kind)
	fmt.Println(p.Next(loop.Later(5*time.Second, errors.New("worker: claimed by another replica")), 3, 0.5))
	fmt.Println(p.Next(loop.Pause(errors.New("kustomer: create: 401 unauthorized")), 1, 0.5).Kind)
	fmt.Println(p.Next(errors.New("mapping: email: not an address"), 1, 0.5).Kind)
	// Output:
	// 1 retry 1s
	// 2 retry 2s
	// 3 done 0s
	// exhausted
	// {later 5s}
	// pause
	// permanent
}
