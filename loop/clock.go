package loop

import "time"

// Clock is the source of time for the limiter, the breaker and the runner.
// It is passed in so that tests drive time (see package looptest) instead of
// sleeping. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends the current time on its channel
	// once d has elapsed. A d <= 0 fires at once.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of [time.Timer] the loop uses.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did so.
	Stop() bool
}

// SystemClock returns the [Clock] of the running system, backed by the time
// package.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// sleep waits for d on clock, or until done is closed. It reports whether the
// full duration elapsed.
func sleep(clock Clock, d time.Duration, done <-chan struct{}) bool {
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	t := clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-done:
		return false
	}
}
