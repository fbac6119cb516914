package loop

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Defaults of [BreakerConfig].
const (
	ThresholdDefault    = 10
	ProbeInitialDefault = time.Second
	ProbeMaxDefault     = 30 * time.Second
)

// BreakerConfig configures a [Breaker]. Zero fields take their defaults.
type BreakerConfig struct {
	// Threshold is how many transient failures in a row, across all items
	// of the workflow, mean an outage (default ThresholdDefault).
	Threshold int
	// ProbeInitial and ProbeMax bound the wait between probes while open;
	// it doubles from ProbeInitial up to ProbeMax (defaults 1s and 30s).
	ProbeInitial, ProbeMax time.Duration
	// Clock defaults to SystemClock().
	Clock Clock
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	c.Threshold = cmp.Or(c.Threshold, ThresholdDefault)
	c.ProbeInitial = cmp.Or(c.ProbeInitial, ProbeInitialDefault)
	c.ProbeMax = cmp.Or(c.ProbeMax, ProbeMaxDefault)
	c.Clock = cmp.Or[Clock](c.Clock, SystemClock())
	return c
}

func (c BreakerConfig) validate() error {
	d := c.withDefaults()
	switch {
	case c.Threshold < 0:
		return errors.New("loop: BreakerConfig.Threshold must not be negative")
	case c.ProbeInitial < 0 || c.ProbeMax < 0:
		return errors.New("loop: BreakerConfig probe delays must not be negative")
	case d.ProbeMax < d.ProbeInitial:
		return errors.New("loop: BreakerConfig.ProbeMax must not be below ProbeInitial")
	}
	return nil
}

// Breaker pauses a workflow on a systemic failure, as the product pauses a
// workflow "on the failed node": it opens at once on a [Pause] decision
// (a 401/403: credentials, role, region) and after Threshold transient
// failures in a row (an outage). While it is open, runners stop starting
// attempts and report their unfinished items as paused; Probe closes it
// again once Kustomer answers. [Throttled] refusals (429s) neither count nor
// break a run: the Limiter handles them.
//
// Create one per workflow with NewBreaker. A Breaker is safe for concurrent use.
type Breaker struct {
	cfg BreakerConfig

	mu      sync.Mutex
	run     int           // transient failures in a row
	open    bool          // the workflow is paused
	opened  chan struct{} // closed when the breaker opens; replaced when it closes
	closed  chan struct{} // closed when the breaker closes; replaced when it opens
	reason  string
	cause   error // what opened it, when known
	onEvent []func(open bool, reason string)
}

// NewBreaker returns a closed Breaker.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	close(closed)
	return &Breaker{cfg: cfg.withDefaults(), opened: make(chan struct{}), closed: closed}, nil
}

// Record feeds the outcome of one Kustomer call, as a decision (see
// [RetryAfter]), to the breaker. nil and permanent failures (Kustomer
// answered) end a run of transient failures; [RetryAfter] and [Unknown]
// extend it, and open the breaker when the run reaches Threshold; [Pause]
// opens it at once; [Throttled] changes nothing.
func (b *Breaker) Record(err error) {
	switch decision, _ := readDecision(err); decision {
	case kindNone, kindPermanent:
		b.mu.Lock()
		b.run = 0
		b.mu.Unlock()
	case kindPause:
		b.setState(true, fmt.Sprintf("systemic failure: %v", err), err)
	case kindThrottled, kindLater:
	case kindRetry, kindUnknown:
		b.mu.Lock()
		b.run++
		n := b.run
		b.mu.Unlock()
		if n >= b.cfg.Threshold {
			b.setState(true, fmt.Sprintf("%d transient failures in a row, last: %v", n, err), err)
		}
	}
}

// Open reports whether the breaker is open (the workflow is paused).
func (b *Breaker) Open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}

// Reason returns why the breaker last changed state.
func (b *Breaker) Reason() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reason
}

// OnChange registers fn to run on every change of state, with the reason;
// it runs once per change, so it is where the worker logs "paused"/"resumed"
// and sets its metric. fn runs on the goroutine that caused the change.
func (b *Breaker) OnChange(fn func(open bool, reason string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onEvent = append(b.onEvent[:len(b.onEvent):len(b.onEvent)], fn)
}

// Probe returns at once if the breaker is closed. While it is open, Probe
// waits ProbeInitial, calls probe, and on failure waits twice as long (at
// most ProbeMax) before the next call; the first success closes the breaker.
// It returns when the breaker is closed (by this or any other Probe) or ctx
// is done. Errors of probe are not recorded.
func (b *Breaker) Probe(ctx context.Context, probe func(ctx context.Context) error) {
	backoff := Policy{InitialDelay: b.cfg.ProbeInitial, MaxDelay: b.cfg.ProbeMax, Multiplier: 2, Jitter: -1}
	for n := 1; ; n++ {
		delay := backoff.Backoff(n, 0)
		b.mu.Lock()
		closed := b.closed
		b.mu.Unlock()
		select {
		case <-closed:
			return
		case <-ctx.Done():
			return
		default:
		}
		t := b.cfg.Clock.NewTimer(delay)
		select {
		case <-closed:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if err := probe(ctx); err == nil {
			b.setState(false, "probe succeeded", nil)
			return
		}
	}
}

// openedChan returns a channel closed while the breaker is open.
func (b *Breaker) openedChan() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened
}

// Trip opens the breaker with reason, as a systemic failure would; it does
// nothing if the breaker is already open. A worker trips it when Kustomer
// fails its check at start, before any item ran.
func (b *Breaker) Trip(reason string) { b.setState(true, reason, nil) }

// TripWith is Trip with the error that made the caller trip it, for
// [Breaker.Cause].
func (b *Breaker) TripWith(reason string, cause error) { b.setState(true, reason, cause) }

// Cause returns the error that opened the breaker (the one fed to Record,
// or given to TripWith), so a caller can tell rejected credentials from an
// outage with errors.As; nil while the breaker is closed or when Trip opened
// it.
func (b *Breaker) Cause() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cause
}

func (b *Breaker) setState(open bool, reason string, cause error) {
	b.mu.Lock()
	if b.open == open {
		b.mu.Unlock()
		return
	}
	b.open, b.reason, b.cause, b.run = open, reason, cause, 0
	if open {
		close(b.opened)
		b.closed = make(chan struct{})
	} else {
		close(b.closed)
		b.opened = make(chan struct{})
	}
	hooks := b.onEvent
	b.mu.Unlock()
	for _, h := range hooks {
		h(open, reason)
	}
}
