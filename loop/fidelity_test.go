package loop_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// fixedWindow is Kustomer's rate limit as the sandbox models it: a budget
// per fixed 60-second window, reported in x-ratelimit-* headers with the
// reset rounded up to the second, and 429 once it is spent.
type fixedWindow struct {
	mu     sync.Mutex
	clock  loop.Clock
	start  time.Time
	window time.Duration
	limit  int

	idx         int64
	used        int
	spent       map[string][]int // client → requests granted per window
	rateLimited map[string][]int // client → 429s per window
}

func (f *fixedWindow) call(client string) kustomer.RateLimit {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock.Now()
	idx := int64(now.Sub(f.start) / f.window)
	if idx != f.idx {
		f.idx, f.used = idx, 0
	}
	for _, m := range []map[string][]int{f.spent, f.rateLimited} {
		for len(m[client]) <= int(idx) {
			m[client] = append(m[client], 0)
		}
	}
	end := f.start.Add(time.Duration(idx+1) * f.window)
	reset := end.Truncate(time.Second)
	if reset.Before(end) {
		reset = reset.Add(time.Second)
	}
	rl := kustomer.RateLimit{Limit: f.limit, Reset: reset, Status: http.StatusCreated}
	if f.used >= f.limit {
		f.rateLimited[client][idx]++
		rl.Status, rl.RetryAfter = http.StatusTooManyRequests, reset.Sub(now)
	} else {
		f.used++
		f.spent[client][idx]++
	}
	rl.Remaining = f.limit - f.used
	return rl
}

// simulate runs replicas (each one limiter with workers, all sharing the
// budget; each response arrives latency after the server counted the
// request) and optionally a foreign client spending foreignShare of it,
// against a fixedWindow for the given number of windows, in fake time.
func simulate(t *testing.T, perMinute, replicas int, foreignShare float64, windows int) *fixedWindow {
	const workers, latency = 4, 150 * time.Millisecond
	t.Helper()
	clock := looptest.NewFakeClock(time.Time{})
	srv := &fixedWindow{
		clock: clock, window: time.Minute, limit: perMinute,
		start:       clock.Now().Add(-17 * time.Second), // we start mid-window
		idx:         -1,
		spent:       map[string][]int{},
		rateLimited: map[string][]int{},
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg conc.WaitGroup
	parked := replicas * workers
	for r := range replicas {
		lim := newLimiter(t, clock, perMinute, 0)
		lim.SetShare(float64(perMinute) / float64(replicas))
		name := string(rune('a' + r))
		for range workers {
			wg.Go(func() {
				for lim.Wait(ctx) == nil {
					rl := srv.call(name)
					timer := clock.NewTimer(latency)
					select {
					case <-ctx.Done():
						timer.Stop()
						return
					case <-timer.C():
						lim.Observe(rl)
					}
				}
			})
		}
	}
	if foreignShare > 0 {
		parked++
		every := time.Duration(float64(time.Minute) / (foreignShare * float64(perMinute)))
		wg.Go(func() {
			for {
				timer := clock.NewTimer(every)
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-timer.C():
					srv.call("foreign")
				}
			}
		})
	}
	end := srv.start.Add(time.Duration(windows) * time.Minute)
	for clock.Now().Before(end) {
		clock.BlockUntil(parked) // everyone waits for time: let it pass
		clock.AdvanceToNext()
	}
	cancel()
	wg.Wait()
	return srv
}

// ours sums the requests of the replicas (not the foreign client) per window.
func ours(m map[string][]int, windows int) []int {
	out := make([]int, windows)
	for client, counts := range m {
		if client == "foreign" {
			continue
		}
		for i, n := range counts {
			if i < windows {
				out[i] += n
			}
		}
	}
	return out
}

func TestLimiterUsesAFixedWindowBudgetFullyWithoutA429(t *testing.T) {
	t.Parallel()
	const perMinute, windows = 1000, 5
	for _, replicas := range []int{1, 3} {
		srv := simulate(t, perMinute, replicas, 0, windows)
		spent, limited := ours(srv.spent, windows), ours(srv.rateLimited, windows)
		t.Logf("%d replica(s): spent per window %v, 429s %v", replicas, spent, limited)
		require.Equal(t, make([]int, windows), limited, "%d replica(s): no 429 at all", replicas)
		for i := 1; i < windows; i++ { // the first window is entered mid-way
			require.GreaterOrEqual(t, spent[i], perMinute*97/100, "%d replica(s), window %d", replicas, i)
		}
	}
}

func TestLimiterMakesRoomForAForeignClientAfterTheFirstWindow(t *testing.T) {
	t.Parallel()
	const perMinute, windows = 1000, 5
	srv := simulate(t, perMinute, 1, 0.3, windows)
	limited := ours(srv.rateLimited, windows)
	t.Logf("spent per window %v, 429s %v, foreign spent %v, foreign 429s %v",
		ours(srv.spent, windows), limited, srv.spent["foreign"], srv.rateLimited["foreign"])
	require.Equal(t, make([]int, windows-1), limited[1:], "no 429 after the first window")
}
