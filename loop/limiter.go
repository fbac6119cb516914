package loop

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// Defaults of [LimiterConfig].
const (
	// PerMinuteDefault is Kustomer's Enterprise plan limit per organisation.
	PerMinuteDefault = 1000
	// PauseFallback is how long everyone waits after a 429 that says neither
	// Retry-After nor x-ratelimit-reset.
	PauseFallback = 5 * time.Second
	// WindowDefault is the length of Kustomer's rate-limit window, assumed
	// until two successive x-ratelimit-reset values tell the real one.
	WindowDefault = time.Minute
	// maxResetAhead bounds how far ahead an x-ratelimit-reset is believed:
	// Kustomer's window is one minute, so a reset further away is a misread
	// header, not a reason to crawl for hours.
	maxResetAhead = 2 * time.Minute
	// reserveFraction of x-ratelimit-limit is never planned for: answers lag
	// behind requests in flight (here, in other replicas, in other clients),
	// so the plan keeps a margin rather than spend the last unit.
	reserveFraction = 0.01
	// measureFraction of a window (of what was left of it at this
	// limiter's first answer in it, if less), and at least measureMin, must
	// have passed since that answer before the others' rate is measured in
	// the window; until then the previous window's measure stands.
	measureFraction = 0.1
	measureMin      = time.Second
	// floorFraction of the share is the slowest pace: a limiter that plans
	// to spend nothing still learns from the odd answer, and waiters never
	// hold reservations for minutes.
	floorFraction = 0.01
	// wakeFactor: when the rate rises by this factor over the lowest rate
	// since the waiters were last woken, they are woken to reserve again at
	// the new rate instead of sleeping out reservations made at the old one.
	wakeFactor = 1.25
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
	// NoPacing turns pacing off: the limiter then spends its share whatever
	// x-ratelimit-remaining says, and only a 429 stops it. By default it
	// paces continuously (see [Limiter.Observe]).
	NoPacing bool
}

func (c LimiterConfig) withDefaults() LimiterConfig {
	c.PerMinute = cmp.Or(c.PerMinute, PerMinuteDefault)
	c.Burst = cmp.Or(c.Burst, max(c.PerMinute/20, 1))
	c.Clock = cmp.Or[Clock](c.Clock, SystemClock())
	return c
}

func (c LimiterConfig) validate() error {
	switch {
	case c.PerMinute < 0:
		return errors.New("loop: LimiterConfig.PerMinute must not be negative")
	case c.Burst < 0:
		return errors.New("loop: LimiterConfig.Burst must not be negative")
	}
	return nil
}

// Limiter is the one rate budget of a process: a token bucket
// (golang.org/x/time/rate) that every workflow, event and item waits on
// before calling Kustomer, plus a pause that every waiter honours. It adapts
// to this replica's share of the organisation's budget (see SetShare) and to
// what Kustomer says: it paces itself so that the other clients of the
// organisation (sibling replicas, other integrations) keep their part of
// each window without a 429, and pauses on a 429 (see Observe).
//
// Create one per process with NewLimiter. A Limiter is safe for concurrent use.
type Limiter struct {
	cfg    LimiterConfig
	clock  Clock
	bucket *rate.Limiter
	own    atomic.Int64 // tokens Wait has granted, ever: this replica's requests
	waited atomic.Int64 // nanoseconds callers spent in Wait, ever

	mu          sync.Mutex
	share       float64 // this replica's budget per minute
	pace        pacer
	pausedUntil time.Time
	applied     rate.Limit    // the limit last set on bucket
	lowest      rate.Limit    // the lowest limit applied since raised was last closed
	raised      chan struct{} // closed (and replaced) when the rate rose well above lowest
	hooks       []func(until time.Time)
}

// pacer is the state of the pacing controller, per Kustomer window. A
// window is known by its x-ratelimit-reset.
//
// The others' consumption is measured as a difference between two answers
// of the same window, never as used-minus-own since the window's start: the
// reported reset is rounded up to the second, so which of this limiter's
// requests near a boundary the server counted in which window is unknown,
// and a wrong guess would pose as a burst of foreign requests.
type pacer struct {
	limit  int           // x-ratelimit-limit, units per window; 0 before the first answer
	window time.Duration // learned from successive resets
	reset  time.Time     // the current window's reset, as reported
	offset time.Duration // how much resets are known to be rounded up, under a second
	seenAt time.Time     // when the last answer was observed

	used int // the most units the current window's answers reported used

	// The first answer of the current window: the others' rate is
	// (used - anchorUsed - (own - anchorOwn)) / (now - anchorAt).
	anchorAt   time.Time
	anchorUsed int
	anchorOwn  int64

	// foreign is the others' rate (units per second) less the rate of the
	// sibling replicas, taken to pace like this one; carried into the next
	// window. It is negative when siblings spend less than this one.
	foreign float64
	planned float64 // this replica's rate, per minute, until reset
}

// end is when the current window ends, as far as is known: the plan holds
// until then. It is never before the true end: offset only grows to what an
// answer of the next window proved.
func (p *pacer) end() time.Time { return p.reset.Add(-p.offset) }

// measureAfter is how long after the window's first answer the others' rate
// may be measured.
func (p *pacer) measureAfter() time.Duration {
	span := min(p.window, p.end().Sub(p.anchorAt))
	return max(time.Duration(measureFraction*float64(span)), measureMin)
}

// NewLimiter returns a Limiter with a full bucket.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &Limiter{
		cfg:    cfg,
		clock:  cfg.Clock,
		share:  float64(cfg.PerMinute),
		pace:   pacer{window: WindowDefault},
		raised: make(chan struct{}),
	}
	l.applied = perSecond(l.share)
	l.lowest = l.applied
	l.bucket = rate.NewLimiter(l.applied, cfg.Burst)
	return l, nil
}

func perSecond(perMinute float64) rate.Limit { return rate.Limit(perMinute / 60) }

// Wait blocks until the limiter is not paused and a token is available, then
// takes the token. It returns an error wrapping ctx.Err() if ctx ends first
// (an unused reservation is given back). Most callers call Wait once right
// before each Kustomer request: every token Wait grants counts as one
// request of this replica when Observe tells this replica's requests from
// the others'. A waiter whose turn was set by a slow pace takes a new turn
// when the pace quickens well (a new window, a larger share). Wait does not
// allocate when a token is ready.
func (l *Limiter) Wait(ctx context.Context) error {
	ctx, span := tracing.Start(ctx, "ksync.budget.wait")
	defer span.End()
	start := l.clock.Now()
	defer func() { l.waited.Add(int64(l.clock.Now().Sub(start))) }()
	for granted := false; !granted; {
		if err := l.waitPause(ctx); err != nil {
			return err
		}
		var err error
		if granted, err = l.take(ctx); err != nil {
			return err
		}
	}
	// A 429 may have paused everyone while this caller waited for its token:
	// keep the token, but honour the pause.
	if err := l.waitPause(ctx); err != nil {
		return err
	}
	l.own.Add(1)
	return nil
}

// Granted returns how many tokens Wait has granted since the Limiter was
// made: the requests this replica was allowed to send.
func (l *Limiter) Granted() int64 { return l.own.Load() }

// Waited returns the time callers have spent in Wait, summed over callers,
// since the Limiter was made: how much the budget held requests back.
func (l *Limiter) Waited() time.Duration { return time.Duration(l.waited.Load()) }

// take waits for a token of the bucket. It reports false, without a token,
// when the pace quickened meanwhile: the caller then takes a new turn.
func (l *Limiter) take(ctx context.Context) (bool, error) {
	now := l.clock.Now()
	l.mu.Lock()
	l.applyLocked(now)
	bucket, raised := l.bucket, l.raised
	if bucket.AllowN(now, 1) {
		l.mu.Unlock()
		return true, nil
	}
	r := bucket.ReserveN(now, 1)
	planEnd := l.pace.end()
	l.mu.Unlock()
	if !r.OK() {
		return false, errors.New("loop: limiter cannot grant a token")
	}
	for {
		delay := r.DelayFrom(now)
		if delay <= 0 {
			return true, nil
		}
		// A window's plan that ends before this turn may give way to a
		// quicker pace: look again at its end.
		nap := delay
		if untilEnd := planEnd.Sub(now); untilEnd > 0 && untilEnd < delay {
			nap = untilEnd
		}
		t := l.clock.NewTimer(nap)
		select {
		case <-t.C():
		case <-raised:
			t.Stop()
			return false, nil // the old bucket and its debts are gone
		case <-ctx.Done():
			t.Stop()
			r.CancelAt(l.clock.Now())
			return false, fmt.Errorf("loop: wait: %w", ctx.Err())
		}
		now = l.clock.Now()
		if nap < delay {
			l.mu.Lock()
			l.applyLocked(now)
			planEnd = l.pace.end()
			quickened := l.raised != raised
			l.mu.Unlock()
			if quickened {
				return false, nil
			}
		}
	}
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

// Observation is what one answer of the service said about the
// organisation's rate budget: Kustomer's x-ratelimit-* and Retry-After
// headers, read by whoever speaks its protocol. A field the answer did not
// carry is zero; Remaining is read only when Limit > 0.
type Observation struct {
	Limit      int           // requests per window (x-ratelimit-limit)
	Remaining  int           // requests left in the window (x-ratelimit-remaining)
	Reset      time.Time     // when the window ends (x-ratelimit-reset)
	RetryAfter time.Duration // the wait the answer asked for (Retry-After)
	// Throttled: the answer refused the request on rate (a 429).
	Throttled bool
}

// Observe adapts the limiter to what one Kustomer response said about the
// rate budget; call it after every response that carried rate-limit headers
// and after every refusal on rate. An Observation neither Throttled nor with
// a Limit is ignored.
//
// On a refusal (a 429) every waiter of this limiter pauses until the later of
// Retry-After and x-ratelimit-reset (PauseFallback if neither is known) and
// the OnPause hooks run.
//
// Any other answer with x-ratelimit-limit paces the limiter (unless
// NoPacing is set). Kustomer's budget is per window and shared by
// every client of the organisation, so the limiter plans the rest of the
// window, in three steps:
//
//   - It measures the others' rate: what the window's answers report used,
//     less the requests this limiter granted (see Wait), over the time
//     between its first answer in the window and this one. The others are
//     the sibling replicas and the foreign clients (other integrations) alike.
//   - It takes the siblings to pace like itself: with a share of 1/N of
//     PerMinute (SetShare), N-1 times its own rate of the others' are the
//     siblings', and the rest is the foreign clients' (negative when the
//     siblings spend less than this replica).
//   - Its rate is then, per the time left until the reset, a 1/N part of
//     what the window's limit leaves after what was used, a reserve of 1%,
//     and the foreign rate continued until the reset; never more than its
//     share, never less than 1% of it.
//
// Counting on the siblings this way, N replicas reach at once, without
// talking to each other, an even split of what the foreign clients leave;
// measuring the siblings as foreign instead would have them chase each
// other's last move from window to window. The others are not measured until
// a tenth of the window (of what was left of it at the first answer, if
// less; at least a second) has passed since the window's first answer: until
// then the previous window's measure stands, and so it does from the reset
// until the first answer of the next window. When no more than the reserve
// remains, every waiter pauses until the window ends (locally: the other
// replicas read the same headers). The window's length is learned from
// successive resets (WindowDefault until then), and so is how much the
// reported reset is rounded up: an answer of the next window before the
// reported reset shows that the window ended by then.
func (l *Limiter) Observe(rl Observation) {
	now := l.clock.Now()
	reset := rl.Reset
	misread := reset.After(now.Add(maxResetAhead))
	if misread {
		reset = now.Add(maxResetAhead)
	}
	if rl.Throttled {
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
	if rl.Limit <= 0 || !reset.After(now) || misread || l.cfg.NoPacing {
		return // no plan can be made of it
	}
	reserve := max(int(math.Ceil(reserveFraction*float64(rl.Limit))), 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	p := &l.pace
	own := l.own.Load()
	switch {
	case reset.Before(p.reset):
		return // a late answer of a window that has ended
	case reset.After(p.reset):
		// A new window. Two windows in a row tell its length; answers
		// further apart may have skipped one.
		if !p.reset.IsZero() {
			if step := reset.Sub(p.reset); step <= maxResetAhead && now.Sub(p.seenAt) < step/2 {
				p.window = step
			}
			// The old window ended before this answer: if that was before
			// the reported reset, the reset was rounded up by at least that.
			if early := p.reset.Sub(now); early > p.offset && early < time.Second {
				p.offset = early
			}
		}
		p.reset, p.used = reset, 0
		p.anchorAt, p.anchorUsed, p.anchorOwn = now, rl.Limit-rl.Remaining, own
	}
	p.limit, p.seenAt = rl.Limit, now
	p.used = max(p.used, rl.Limit-rl.Remaining) // answers may arrive out of order
	end := p.end()
	if !end.After(now) {
		return // a late answer: the window has ended
	}
	if rl.Limit-p.used <= reserve {
		// The next requests could be refused: stop until the window resets.
		// Every replica sees the same headers, so nothing is broadcast.
		l.pausedUntil = maxTime(l.pausedUntil, end)
		return
	}
	replicas := l.replicasLocked()
	if span := now.Sub(p.anchorAt); span >= p.measureAfter() {
		mine := float64(own - p.anchorOwn)
		others := max(float64(p.used-p.anchorUsed)-mine, 0)
		p.foreign = (others - (replicas-1)*mine) / span.Seconds()
	}
	left := end.Sub(now).Seconds()
	p.planned = (float64(rl.Limit-reserve-p.used)/left - p.foreign) / replicas * 60
	l.applyLocked(now)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
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
// and go. The share caps the pace (see Observe); the burst shrinks in
// proportion. Non-positive values are ignored.
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
// share, or less while the pace (see Observe) says so.
func (l *Limiter) PerMinute() float64 {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.effectiveLocked(now)
}

// effectiveLocked is the rate in force at now, per minute: the window's
// plan until its reset; after it, until the next window's first answer,
// what a fresh window leaves this replica if the others keep their rate.
func (l *Limiter) effectiveLocked(now time.Time) float64 {
	p := &l.pace
	planned := l.share
	switch {
	case p.limit == 0 || l.cfg.NoPacing:
	case now.Before(p.end()):
		planned = p.planned
	default:
		reserve := max(math.Ceil(reserveFraction*float64(p.limit)), 1)
		w := p.window.Seconds()
		planned = ((float64(p.limit)-reserve)/w - p.foreign) / l.replicasLocked() * 60
	}
	return min(l.share, max(planned, floorFraction*l.share))
}

// replicasLocked is how many replicas share the budget, as SetShare tells.
func (l *Limiter) replicasLocked() float64 { return max(float64(l.cfg.PerMinute)/l.share, 1) }

// applyLocked sets the bucket's rate to the one in force at now (a new
// window's rate is applied lazily, on the first call after the reset).
//
// When the rate rose well above the lowest one since the waiters were last
// woken, it wakes them, so that none sleeps out a turn set at the slow pace:
// the bucket is replaced by one holding the tokens the old one had, without
// its debt (the turns reserved ahead, which the waking waiters give up and
// take again at the new pace). Cancelling those turns one by one would not
// do: the bucket gives back only the last turn reserved.
func (l *Limiter) applyLocked(now time.Time) {
	lim := perSecond(l.effectiveLocked(now))
	if lim == l.applied {
		return
	}
	l.applied = lim
	switch {
	case lim > wakeFactor*l.lowest:
		burst := l.bucket.Burst()
		tokens := int(math.Floor(min(max(l.bucket.TokensAt(now), 0), float64(burst))))
		l.bucket = rate.NewLimiter(lim, burst)
		l.bucket.AllowN(now, burst-tokens)
		close(l.raised)
		l.raised, l.lowest = make(chan struct{}), lim
		return
	case lim < l.lowest:
		l.lowest = lim
	}
	l.bucket.SetLimitAt(now, lim)
}
