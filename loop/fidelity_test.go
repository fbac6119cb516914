package loop_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sourcegraph/conc"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// fixedWindow is Kustomer's rate limit as the sandbox models it: a budget
// per fixed window (60 s at Kustomer), reported in x-ratelimit-* headers with the
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

func (f *fixedWindow) call(client string) loop.Observation {
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
	rl := loop.Observation{Limit: f.limit, Reset: reset}
	if f.used >= f.limit {
		f.rateLimited[client][idx]++
		rl.Throttled, rl.RetryAfter = true, reset.Sub(now)
	} else {
		f.used++
		f.spent[client][idx]++
	}
	rl.Remaining = f.limit - f.used
	return rl
}

// scenario is one run of the rate-fidelity simulation.
type scenario struct {
	perWindow int           // the organisation's budget per window
	window    time.Duration // the server's window (the replicas learn it)
	replicas  int           // each one limiter with workers, sharing the budget
	foreign   float64       // the share of the budget a foreign client spends at an even pace, not adapting
	windows   int
}

func (sc scenario) String() string {
	return fmt.Sprintf("%d replica(s), %s windows, foreign %.0f%%", sc.replicas, sc.window, 100*sc.foreign)
}

// simulate runs the scenario against a fixedWindow in fake time: each
// replica's workers wait on its limiter, call the server, and observe the
// answer latency after the server counted the request. The first window is
// entered 17.3 s in (scaled to the window's length), so that the reported
// resets are rounded up.
func simulate(t *testing.T, sc scenario) *fixedWindow {
	const workers = 4
	latency := 150 * time.Millisecond * sc.window / time.Minute
	t.Helper()
	perMinute := int(float64(sc.perWindow) * float64(time.Minute) / float64(sc.window))
	clock := looptest.NewFakeClock(time.Time{})
	srv := &fixedWindow{
		clock: clock, window: sc.window, limit: sc.perWindow,
		start:       clock.Now().Add(-sc.window * 173 / 600),
		idx:         -1,
		spent:       map[string][]int{},
		rateLimited: map[string][]int{},
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg conc.WaitGroup
	parked := sc.replicas * workers
	for r := range sc.replicas {
		lim := newLimiter(t, clock, perMinute, 0)
		lim.SetShare(float64(perMinute) / float64(sc.replicas))
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
	if sc.foreign > 0 {
		parked++
		every := time.Duration(float64(sc.window) / (sc.foreign * float64(sc.perWindow)))
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
	end := srv.start.Add(time.Duration(sc.windows) * sc.window)
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

// theirs is the foreign client's requests per window.
func theirs(m map[string][]int, windows int) []int {
	out := make([]int, windows)
	copy(out, m["foreign"])
	return out
}

func TestLimiterUsesAFixedWindowBudgetFullyWithoutA429(t *testing.T) {
	t.Parallel()
	for _, sc := range []scenario{
		{perWindow: 1000, window: time.Minute, replicas: 1, windows: 5},
		{perWindow: 1000, window: time.Minute, replicas: 3, windows: 5},
		{perWindow: 300, window: 10 * time.Second, replicas: 1, windows: 5},
		{perWindow: 300, window: 10 * time.Second, replicas: 3, windows: 5},
	} {
		t.Run(sc.String(), func(t *testing.T) {
			t.Parallel()
			srv := simulate(t, sc)
			spent, limited := ours(srv.spent, sc.windows), ours(srv.rateLimited, sc.windows)
			t.Logf("spent per window %v, 429s %v", spent, limited)
			require.Equal(t, make([]int, sc.windows), limited, "no 429 at all")
			// The first window is entered mid-way. In the second, replicas
			// still settle their shares from what the first taught each of
			// them, in an order the scheduler picks: over 500 runs of 3
			// replicas at 300 per 10 s it spent 290 to 296. From the third on
			// every run spent at least 98%.
			for i := 1; i < sc.windows; i++ {
				want := sc.perWindow * 97 / 100
				if i == 1 {
					want = sc.perWindow * 96 / 100
				}
				require.GreaterOrEqual(t, spent[i], want, "window %d", i)
			}
		})
	}
}

func TestLimiterLeavesAForeignClientItsPartAfterTheFirstWindow(t *testing.T) {
	t.Parallel()
	for _, sc := range []scenario{
		{perWindow: 1000, window: time.Minute, replicas: 1, foreign: 0.3, windows: 5},
		{perWindow: 1000, window: time.Minute, replicas: 3, foreign: 0.3, windows: 5},
		{perWindow: 300, window: 10 * time.Second, replicas: 1, foreign: 0.3, windows: 5},
		{perWindow: 300, window: 10 * time.Second, replicas: 3, foreign: 0.3, windows: 5},
	} {
		t.Run(sc.String(), func(t *testing.T) {
			t.Parallel()
			srv := simulate(t, sc)
			spent, limited := ours(srv.spent, sc.windows), ours(srv.rateLimited, sc.windows)
			foreignSpent, foreignLimited := theirs(srv.spent, sc.windows), theirs(srv.rateLimited, sc.windows)
			t.Logf("spent per window %v, 429s %v, foreign spent %v, foreign 429s %v", spent, limited, foreignSpent, foreignLimited)
			// The first window is the one the replicas learn the others in.
			require.Equal(t, make([]int, sc.windows-1), limited[1:], "no 429 for the replicas")
			require.Equal(t, make([]int, sc.windows-1), foreignLimited[1:], "no 429 for the foreign client")
			for i := 1; i < sc.windows; i++ {
				require.GreaterOrEqual(t, spent[i], sc.perWindow*65/100, "window %d: the replicas spend the rest", i)
			}
		})
	}
}
