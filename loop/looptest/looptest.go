// Package looptest provides a fake [loop.Clock] for tests of the loop and of
// the packages that use it, so no test has to sleep for time to pass.
package looptest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// FakeClock is a [loop.Clock] whose time moves only when Advance is called.
// Its zero value is not usable; call NewFakeClock. It is safe for concurrent use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever the set of timers changes
}

// NewFakeClock returns a FakeClock reading start. A zero start means a fixed,
// arbitrary instant (2026-01-01T00:00:00Z) so tests are reproducible.
func NewFakeClock(start time.Time) *FakeClock {
	if start.IsZero() {
		start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	return &FakeClock{now: start, changed: make(chan struct{})}
}

// Now returns the fake current time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock has been advanced by d.
// A d <= 0 fires at once.
func (c *FakeClock) NewTimer(d time.Duration) loop.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

// Advance moves the clock forward by d and fires, in order of their deadline,
// every timer due by then.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
		} else {
			kept = append(kept, t)
		}
	}
	clear(c.timers[len(kept):])
	c.timers = kept
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.ch <- c.now
	}
	if len(due) > 0 {
		c.notifyLocked()
	}
}

// Waiters returns the number of timers that have not fired or been stopped.
func (c *FakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// BlockUntil blocks until at least n timers are waiting on the clock: the way
// a test knows that goroutines have reached the point where they wait for time.
func (c *FakeClock) BlockUntil(n int) {
	_ = c.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext is BlockUntil that gives up, returning ctx.Err(), when
// ctx ends.
func (c *FakeClock) BlockUntilContext(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return nil
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// AdvanceToNext moves the clock to the earliest waiting timer's deadline and
// fires it (and any other due then); it reports false, moving nothing, when
// no timer waits.
func (c *FakeClock) AdvanceToNext() bool {
	next, ok := c.NextDeadline()
	if !ok {
		return false
	}
	c.Advance(next.Sub(c.Now()))
	return true
}

// Drive advances the clock from timer to timer, as fast as timers appear,
// until ctx ends: for tests that care about outcomes, not about the order in
// which time passes. Run it on its own goroutine.
func (c *FakeClock) Drive(ctx context.Context) {
	for c.BlockUntilContext(ctx, 1) == nil {
		c.AdvanceToNext()
	}
}

// NextDeadline returns the earliest deadline among waiting timers and true,
// or the zero time and false when no timer waits.
func (c *FakeClock) NextDeadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, t := range c.timers {
		if next.IsZero() || t.at.Before(next) {
			next = t.at
		}
	}
	return next, !next.IsZero()
}

func (c *FakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type fakeTimer struct {
	clock *FakeClock
	at    time.Time
	ch    chan time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.timers {
		if o == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			c.notifyLocked()
			return true
		}
	}
	return false
}
