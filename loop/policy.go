package loop

import (
	"cmp"
	"errors"
	"math"
	"time"
)

// Defaults of [Policy]; they are the product's "auto-retry with exponential
// backoff up to 5 attempts".
const (
	MaxAttemptsDefault  = 5
	InitialDelayDefault = time.Second
	MaxDelayDefault     = time.Minute
	MultiplierDefault   = 2.0
	JitterDefault       = 0.2
)

// Policy is a workflow's retry policy for retryable failures, and the one
// exponential backoff of the module: the Breaker's probes and the worker's
// dead-lettering of given-up messages wait by [Policy.Backoff] too. A zero
// field takes its default; set Jitter negative for no jitter at all.
type Policy struct {
	// MaxAttempts is the number of attempts an item gets, the first one
	// included (1 means never retry).
	MaxAttempts int
	// InitialDelay is the wait after the first failed attempt.
	InitialDelay time.Duration
	// MaxDelay caps every computed delay (a longer Retry-After from Kustomer
	// is still honoured).
	MaxDelay time.Duration
	// Multiplier grows the delay after each further failure (>= 1).
	Multiplier float64
	// Jitter spreads each delay uniformly by ±Jitter of itself (0..1) so
	// items failed together do not retry together.
	Jitter float64
}

// withDefaults returns p with its zero fields set to the defaults.
func (p Policy) withDefaults() Policy {
	p.MaxAttempts = cmp.Or(p.MaxAttempts, MaxAttemptsDefault)
	p.InitialDelay = cmp.Or(p.InitialDelay, InitialDelayDefault)
	p.MaxDelay = cmp.Or(p.MaxDelay, MaxDelayDefault)
	p.Multiplier = cmp.Or(p.Multiplier, MultiplierDefault)
	p.Jitter = cmp.Or(p.Jitter, JitterDefault)
	if p.Jitter < 0 {
		p.Jitter = 0
	}
	return p
}

func (p Policy) validate() error {
	p = p.withDefaults()
	switch {
	case p.MaxAttempts < 1:
		return errors.New("loop: Policy.MaxAttempts must be at least 1")
	case p.InitialDelay < 0 || p.MaxDelay < 0:
		return errors.New("loop: Policy delays must not be negative")
	case p.MaxDelay < p.InitialDelay:
		return errors.New("loop: Policy.MaxDelay must not be below InitialDelay")
	case p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0):
		return errors.New("loop: Policy.Multiplier must be a finite number >= 1")
	case p.Jitter > 1 || math.IsNaN(p.Jitter):
		return errors.New("loop: Policy.Jitter must be at most 1")
	}
	return nil
}

// Backoff returns how long to wait after failed attempt number attempt
// (1-based) before the next one: InitialDelay·Multiplier^(attempt-1), spread
// by ±Jitter using rnd (uniform in [0,1)), and never more than MaxDelay.
// Zero fields of p take their defaults. It is pure: the same arguments give
// the same delay.
func (p Policy) Backoff(attempt int, rnd float64) time.Duration {
	p = p.withDefaults()
	attempt = max(attempt, 1)
	d := float64(p.InitialDelay) * math.Pow(p.Multiplier, float64(attempt-1))
	d = min(d, float64(p.MaxDelay))
	d *= 1 + p.Jitter*(2*rnd-1)
	d = max(min(d, float64(p.MaxDelay)), 0)
	return time.Duration(d)
}
