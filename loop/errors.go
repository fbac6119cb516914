package loop

// The errors of this package are the decisions a Task returns to steer the
// Runner (see the package comment), and how the Runner and the Breaker read
// them. Each decision's message is its cause's, so wrapping changes no text
// a user sees; one without a cause says "loop: ...".

import (
	"errors"
	"time"
)

// RetryError is the decision to try an item again. Create it with
// [RetryAfter] or [Throttled].
type RetryError struct {
	// Delay is the least wait before the next attempt, as the service
	// asked (Retry-After); 0 leaves the wait to the Policy's backoff.
	Delay time.Duration
	// Throttled: the service refused on rate, not for a fault of its own,
	// so a Breaker does not count it towards an outage.
	Throttled bool
	Err       error
}

// RetryAfter returns the decision to retry after a transient failure err,
// no sooner than d (0: the Policy's backoff alone).
func RetryAfter(d time.Duration, err error) error {
	return &RetryError{Delay: max(d, 0), Err: err}
}

// Throttled returns the decision to retry after err, a refusal on rate,
// no sooner than d.
func Throttled(d time.Duration, err error) error {
	return &RetryError{Delay: max(d, 0), Throttled: true, Err: err}
}

func (e *RetryError) Error() string { return message(e.Err, "loop: retry") }
func (e *RetryError) Unwrap() error { return e.Err }

// Is reports whether target is a *RetryError.
func (e *RetryError) Is(target error) bool {
	_, ok := target.(*RetryError)
	return ok
}

// PermanentError is the decision to fail an item at once. Create it with
// [Permanent].
type PermanentError struct{ Err error }

// Permanent returns the decision to fail the item with err, without retrying.
func Permanent(err error) error { return &PermanentError{Err: err} }

func (e *PermanentError) Error() string { return message(e.Err, "loop: permanent failure") }
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports whether target is a *PermanentError.
func (e *PermanentError) Is(target error) bool {
	_, ok := target.(*PermanentError)
	return ok
}

// PauseError is the decision to pause the workflow. Create it with [Pause].
type PauseError struct{ Err error }

// Pause returns the decision to pause the workflow because of err, a
// failure every request would meet: the Run stops, the Breaker opens, and
// the item's attempts are not spent.
func Pause(err error) error { return &PauseError{Err: err} }

func (e *PauseError) Error() string { return message(e.Err, "loop: pause") }
func (e *PauseError) Unwrap() error { return e.Err }

// Is reports whether target is a *PauseError.
func (e *PauseError) Is(target error) bool {
	_, ok := target.(*PauseError)
	return ok
}

// UnknownError is the decision for an attempt whose outcome is unknown.
// Create it with [Unknown].
type UnknownError struct {
	// Delay is the least wait before the next attempt, when the service
	// asked for one (a 504 with Retry-After); 0 leaves it to the backoff.
	Delay time.Duration
	Err   error
}

// Unknown returns the decision for an attempt that failed with err after
// the request may have been carried out: it is retried like a transient
// failure, and counts as one towards an outage.
func Unknown(err error) error { return &UnknownError{Err: err} }

func (e *UnknownError) Error() string { return message(e.Err, "loop: outcome unknown") }
func (e *UnknownError) Unwrap() error { return e.Err }

// Is reports whether target is an *UnknownError.
func (e *UnknownError) Is(target error) bool {
	_, ok := target.(*UnknownError)
	return ok
}

// LaterError is the decision that an item could not be attempted yet:
// something else holds it (another replica creating the same item) for at
// most Delay. Create it with [Later].
type LaterError struct {
	Delay time.Duration
	Err   error
}

// Later returns the decision to attempt the item again after d, because err
// kept this attempt from being made (it never reached the service): the
// attempt is not spent, it is no failure, and a Breaker does not count it.
func Later(d time.Duration, err error) error { return &LaterError{Delay: max(d, 0), Err: err} }

func (e *LaterError) Error() string { return message(e.Err, "loop: later") }
func (e *LaterError) Unwrap() error { return e.Err }

// Is reports whether target is a *LaterError.
func (e *LaterError) Is(target error) bool {
	_, ok := target.(*LaterError)
	return ok
}

func message(err error, fallback string) string {
	if err == nil {
		return fallback
	}
	return err.Error()
}

// kind is what the Runner and the Breaker do about a failed attempt.
type kind int

const (
	kindNone kind = iota
	kindRetry
	kindThrottled
	kindPermanent
	kindPause
	kindUnknown
	kindLater
)

// decision is implemented by every decision, so that errors.As finds the
// outermost one whatever its type.
type decision interface {
	error
	steer() (kind, time.Duration)
}

func (e *RetryError) steer() (kind, time.Duration) {
	if e.Throttled {
		return kindThrottled, e.Delay
	}
	return kindRetry, e.Delay
}
func (e *PermanentError) steer() (kind, time.Duration) { return kindPermanent, 0 }
func (e *PauseError) steer() (kind, time.Duration)     { return kindPause, 0 }
func (e *UnknownError) steer() (kind, time.Duration)   { return kindUnknown, e.Delay }
func (e *LaterError) steer() (kind, time.Duration)     { return kindLater, e.Delay }

// readDecision returns the decision err holds, and the least delay it asks for;
// an error that holds none is permanent.
func readDecision(err error) (kind, time.Duration) {
	if err == nil {
		return kindNone, 0
	}
	var d decision
	if errors.As(err, &d) {
		return d.steer()
	}
	return kindPermanent, 0
}

// decided returns err with its decision made explicit: an error that holds
// none is wrapped in [Permanent].
func decided(err error) error {
	var d decision
	if err == nil || errors.As(err, &d) {
		return err
	}
	return Permanent(err)
}
