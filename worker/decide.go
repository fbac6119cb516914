package worker

import (
	"context"
	"errors"
	"net/http"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
)

// kustomerDecision is the one adapter from Kustomer's answers to the decisions the
// loop acts on; everything above reads them with errors.Is and errors.As.
// The kustomer client classified the answer once, at the edge; it only
// says what that class means for an item:
//
//	nil                                     nil
//	a timeout, a lost connection, a 504     loop.Unknown (it may have been created),
//	                                        after its Retry-After, if any
//	our own cancellation mid-request        loop.Unknown, for the same reason
//	401, 403 (systemic)                     loop.Pause
//	429                                     loop.Throttled after its Retry-After
//	5xx, connection refused (retryable)     loop.RetryAfter its Retry-After, if any
//	4xx, 404 not found, local (permanent)   loop.Permanent
//	anything unclassified                   loop.Permanent
//
// The decision wraps err, so err's message and its *kustomer.Error (status,
// code, for the dead letter) are still there.
func kustomerDecision(err error) error {
	if err == nil {
		return nil
	}
	var ke *kustomer.Error
	if !errors.As(err, &ke) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return loop.Unknown(err)
		}
		return loop.Permanent(err)
	}
	switch {
	case ke.Timeout:
		return &loop.UnknownError{Delay: ke.RetryAfter, Err: err}
	case ke.Class == kustomer.ClassSystemic:
		return loop.Pause(err)
	case ke.Class == kustomer.ClassRetryable && ke.StatusCode == http.StatusTooManyRequests:
		return loop.Throttled(ke.RetryAfter, err)
	case ke.Class == kustomer.ClassRetryable:
		return loop.RetryAfter(ke.RetryAfter, err)
	default:
		return loop.Permanent(err)
	}
}

// unresolved is the decision for an attempt that could not find out what
// an earlier attempt did, because the question itself failed (a look-up by
// externalId, a read of the earlier bulk job): Kustomer's answer decides as
// for any request (a pause pauses, a 429 waits), but an answer that would
// fail the item leaves its outcome unknown instead. Either way nothing is
// sent again and the claim stays, so the next attempt asks again.
func unresolved(err error) error {
	if later := (*loop.LaterError)(nil); errors.As(err, &later) {
		return err // not asked: the claim was lost meanwhile (spender)
	}
	d := kustomerDecision(err)
	if errors.Is(d, &loop.PermanentError{}) {
		return loop.Unknown(err)
	}
	return d
}

// ObserveRateLimits returns the hook to set as [kustomer.Config.OnResponse]
// so that lim paces itself by every response's rate-limit headers.
func ObserveRateLimits(lim *loop.Limiter) func(kustomer.RateLimit) {
	return func(rl kustomer.RateLimit) { lim.Observe(observation(rl)) }
}

// observation is what lim needs of one response's rate-limit headers.
func observation(rl kustomer.RateLimit) loop.Observation {
	return loop.Observation{
		Limit:      rl.Limit,
		Remaining:  rl.Remaining,
		Reset:      rl.Reset,
		RetryAfter: rl.RetryAfter,
		Throttled:  rl.Status == http.StatusTooManyRequests,
	}
}
