package loop

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

// Defaults of [LimiterConfig].
const (
	// PerMinuteDefault is Kustomer's Enterprise plan limit per organisation.
	PerMinuteDefault = 1000
	// LowWatermarkDefault: below 10% of x-ratelimit-limit left, slow down.
	LowWatermarkDefault = 0.1
	// PauseFallback is how long everyone waits after a 429 that says neither
	// Retry-After nor x-ratelimit-reset.
	PauseFallback = 5 * time.Second
	// maxResetAhead bounds how far ahead an x-ratelimit-reset is believed:
	// Kustomer's window is one minute, so a reset further away is a misread
	// header, not a reason to crawl for hours.
	maxResetAhead = 2 * time.Minute
	// reserveFraction of x-ratelimit-limit is left unspent at the end of a
	// window that runs low: answers lag behind requests in flight.
	reserveFraction = 0.01
)

// LimiterConfig configures a [Limiter]. Zero fields take their defaults.
type LimiterConfig struct {
	// PerMinute is the organisation's request budget per minute, shared by
	// every replica (default PerMinuteDefault). Until SetShare is called a
	// limiter spends all of it.
	PerMinute int
	// Burst is how many requests may go at once after idle time (default
	// PerMinute/20, at least 1). A replica with a share of the budget gets
	// the same fraction of the burst.
	Burst int
	// Clock defaults to SystemClock().
	Clock Clock
	// LowWatermark is the fraction of x-ratelimit-limit below which a low
	// x-ratelimit-remaining slows the rate until the window resets (other
	// clients of the same organisation spend the same budget). Default
	// LowWatermarkDefault; negative disables the slow-down.
	LowWatermark float64
}

func (c LimiterConfig) withDefaults() LimiterConfig {
	c.PerMinute = cmp.Or(c.PerMinute, PerMinuteDefault)
	c.Burst = cmp.Or(c.Burst, max(c.PerMinute/20, 1))
	c.Clock = cmp.Or[Clock](c.Clock, SystemClock())
	c.LowWatermark = cmp.Or(c.LowWatermark, LowWatermarkDefault)
	return c
}

func (c LimiterConfig) validate() error {
	switch {
	case c.PerMinute < 0:
		return errors.New("loop: LimiterConfig.PerMinute must not be negative")
	case c.Burst < 0:
		return errors.New("loop: LimiterConfig.Burst must not be negative")
	case c.LowWatermark >= 1 || math.IsNaN(c.LowWatermark):
		return errors.New("loop: LimiterConfig.LowWatermark must be below 1")
	}
	return nil
}

// Limiter is the one rate budget of a process: a token bucket
// (golang.org/x/time/rate) that every workflow, event and item waits on
// before calling Kustomer, plus a pause that every waiter honours. It adapts
// to what Kustomer says (see Observe) and to this replica's share of the
// organisation's budget (see SetShare).
//
// Create one per process with NewLimiter. A Limiter is safe for concurrent use.
type Limiter struct {
	cfg    LimiterConfig
	clock  Clock
	bucket *rate.Limiter

	mu          sync.Mutex
	share       float64   // this replica's budget per minute
	slow        float64   // per minute, in force while now < slowUntil
	slowUntil   time.Time // end of the Kustomer window that is running low
	pausedUntil time.Time
	applied     rate.Limit // the limit last set on bucket
	hooks       []func(until time.Time)
}

// NewLimiter returns a Limiter with a full bucket.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &Limiter{
		cfg:   cfg,
		clock: cfg.Clock,
		share: float64(cfg.PerMinute),
	}
	l.applied = perSecond(l.share)
	l.bucket = rate.NewLimiter(l.applied, cfg.Burst)
	return l, nil
}

func perSecond(perMinute float64) rate.Limit { return rate.Limit(perMinute / 60) }

// Wait blocks until the limiter is not paused and a token is available, then
// takes the token. It returns an error wrapping ctx.Err() if ctx ends first
// (an unused reservation is given back). Most callers call Wait once right
// before each Kustomer request.
func (l *Limiter) Wait(ctx context.Context) error {
	if err := l.waitPause(ctx); err != nil {
		return err
	}
	now := l.clock.Now()
	l.mu.Lock()
	l.applyLocked(now)
	r := l.bucket.ReserveN(now, 1)
	l.mu.Unlock()
	if !r.OK() {
		return errors.New("loop: limiter cannot grant a token")
	}
	if !sleep(l.clock, r.DelayFrom(now), ctx.Done()) {
		r.CancelAt(l.clock.Now())
		return fmt.Errorf("loop: wait: %w", ctx.Err())
	}
	// A 429 may have paused everyone while this caller waited for its token:
	// keep the token, but honour the pause.
	return l.waitPause(ctx)
}

// waitPause blocks while the limiter is paused.
func (l *Limiter) waitPause(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("loop: wait: %w", err)
		}
		now := l.clock.Now()
		l.mu.Lock()
		until := l.pausedUntil
		l.mu.Unlock()
		if !now.Before(until) {
			return nil
		}
		sleep(l.clock, until.Sub(now), ctx.Done()) // the pause may have been extended meanwhile: check again
	}
}

// Observe adapts the limiter to the rate-limit headers of one Kustomer
// response; call it after every response that carried them. On a 429 every
// waiter of this limiter pauses until the later of Retry-After and
// x-ratelimit-reset (PauseFallback if neither is known) and the OnPause hooks
// run. When x-ratelimit-remaining falls below LowWatermark of
// x-ratelimit-limit, the rate drops so that this replica's share of what
// remains lasts until the window resets; at the reset the full rate returns.
// A RateLimit with no Status and no Limit is ignored.
func (l *Limiter) Observe(rl kustomer.RateLimit) {
	now := l.clock.Now()
	reset := rl.Reset
	if reset.After(now.Add(maxResetAhead)) {
		reset = now.Add(maxResetAhead)
	}
	if rl.Status == http.StatusTooManyRequests {
		until := now.Add(rl.RetryAfter)
		if reset.After(until) {
			until = reset
		}
		if !until.After(now) {
			until = now.Add(PauseFallback)
		}
		if l.extendPause(until) {
			l.mu.Lock()
			hooks := l.hooks
			l.mu.Unlock()
			for _, h := range hooks {
				h(until)
			}
		}
		return
	}
	if rl.Limit <= 0 || !reset.After(now) || l.cfg.LowWatermark < 0 {
		return
	}
	if float64(rl.Remaining) >= l.cfg.LowWatermark*float64(rl.Limit) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if reset.After(l.slowUntil) {
			// A new window began (reported resets are rounded up, so the
			// old one may end a little before slowUntil): full rate again.
			l.slowUntil = time.Time{}
			l.applyLocked(now)
		}
		return
	}
	// Answers lag behind requests in flight (here and in other replicas),
	// so keep a reserve rather than plan to spend the last unit.
	usable := rl.Remaining - max(int(math.Ceil(reserveFraction*float64(rl.Limit))), 1)
	if usable <= 0 {
		// The next requests could be refused: stop until the window resets.
		// Every replica sees the same headers, so nothing is broadcast.
		l.extendPause(reset)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fraction := l.share / float64(l.cfg.PerMinute)
	slow := float64(usable) * fraction / reset.Sub(now).Minutes()
	if reset.Equal(l.slowUntil) {
		slow = min(slow, l.slow) // answers of one window may arrive out of order
	}
	l.slow, l.slowUntil = slow, reset
	l.applyLocked(now)
}

// PauseUntil makes every waiter wait until t. A pause is extended, never
// shortened: a t before the current pause's end changes nothing. It does not
// run the OnPause hooks, so a pause received from another replica is not
// broadcast again.
func (l *Limiter) PauseUntil(t time.Time) { l.extendPause(t) }

// extendPause reports whether t extended the pause.
func (l *Limiter) extendPause(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !t.After(l.pausedUntil) {
		return false
	}
	l.pausedUntil = t
	return true
}

// PausedUntil returns the end of the current pause; a time not after Now
// means not paused.
func (l *Limiter) PausedUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pausedUntil
}

// OnPause registers fn to run whenever a 429 seen by Observe starts or
// extends a pause, with the pause's end. The worker uses it to broadcast the
// pause to the other replicas. fn runs on the goroutine that called Observe
// and must not block for long.
func (l *Limiter) OnPause(fn func(until time.Time)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hooks = append(l.hooks[:len(l.hooks):len(l.hooks)], fn)
}

// SetShare sets this replica's share of the organisation's budget, in
// requests per minute; the cross-replica budget calls it as replicas come
// and go. The burst shrinks in proportion. Non-positive values are ignored.
func (l *Limiter) SetShare(perMinute float64) {
	if perMinute <= 0 || math.IsNaN(perMinute) || math.IsInf(perMinute, 0) {
		return
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.share = perMinute
	burst := int(math.Round(float64(l.cfg.Burst) * perMinute / float64(l.cfg.PerMinute)))
	l.bucket.SetBurstAt(now, max(burst, 1))
	l.applyLocked(now)
}

// PerMinute returns the rate in force now, in requests per minute: the
// share, or less while Kustomer reports the window running low.
func (l *Limiter) PerMinute() float64 {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.effectiveLocked(now)
}

func (l *Limiter) effectiveLocked(now time.Time) float64 {
	if now.Before(l.slowUntil) {
		return min(l.share, l.slow)
	}
	return l.share
}

// applyLocked sets the bucket's rate to the one in force at now; the
// slow-down ends lazily, on the first call after the window reset.
func (l *Limiter) applyLocked(now time.Time) {
	if lim := perSecond(l.effectiveLocked(now)); lim != l.applied {
		l.bucket.SetLimitAt(now, lim)
		l.applied = lim
	}
}
