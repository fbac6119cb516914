package loop_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

func TestPolicyBackoffGrowsExponentiallyAndIsCapped(t *testing.T) {
	t.Parallel()
	p := loop.Policy{InitialDelay: time.Second, MaxDelay: 10 * time.Second, Multiplier: 2, Jitter: -1}
	var got []time.Duration
	for attempt := 1; attempt <= 6; attempt++ {
		got = append(got, p.Backoff(attempt, 0.5))
	}
	require.Equal(t, []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, got)
}

func TestPolicyBackoffSpreadsByJitterWithinBounds(t *testing.T) {
	t.Parallel()
	p := loop.Policy{InitialDelay: 10 * time.Second, MaxDelay: time.Minute, Multiplier: 2, Jitter: 0.2}
	require.Equal(t, 8*time.Second, p.Backoff(1, 0))
	require.Equal(t, 10*time.Second, p.Backoff(1, 0.5))
	require.InDelta(t, float64(12*time.Second), float64(p.Backoff(1, 0.9999999)), float64(time.Millisecond))
	// Jitter never pushes a delay past MaxDelay.
	require.Equal(t, time.Minute, p.Backoff(10, 0.9999999))
}

func TestPolicyZeroValueUsesTheProductDefaults(t *testing.T) {
	t.Parallel()
	var p loop.Policy
	require.Equal(t, loop.InitialDelayDefault, p.Backoff(1, 0.5))
	require.Equal(t, 2*loop.InitialDelayDefault, p.Backoff(2, 0.5))
	require.Equal(t, loop.MaxDelayDefault, p.Backoff(30, 0.5))
	require.Equal(t, time.Duration(float64(loop.InitialDelayDefault)*(1-loop.JitterDefault)), p.Backoff(1, 0))
}

func TestNewRejectsAnInvalidConfig(t *testing.T) {
	t.Parallel()
	lim, err := loop.NewLimiter(loop.LimiterConfig{})
	require.NoError(t, err)
	for name, cfg := range map[string]loop.Config{
		"no limiter":           {},
		"negative concurrency": {Limiter: lim, Concurrency: -1},
		"max below initial":    {Limiter: lim, Policy: loop.Policy{InitialDelay: time.Minute, MaxDelay: time.Second}},
		"shrinking multiplier": {Limiter: lim, Policy: loop.Policy{Multiplier: 0.5}},
		"jitter above one":     {Limiter: lim, Policy: loop.Policy{Jitter: 1.5}},
	} {
		_, err := loop.New(cfg)
		require.Error(t, err, name)
		require.Regexp(t, "^loop: ", err.Error(), name)
	}
	_, err = loop.NewLimiter(loop.LimiterConfig{PerMinute: -1})
	require.Error(t, err)
	_, err = loop.NewBreaker(loop.BreakerConfig{ProbeInitial: time.Minute, ProbeMax: time.Second})
	require.Error(t, err)
}
