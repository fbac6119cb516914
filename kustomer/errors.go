package kustomer

import (
	"errors"
	"fmt"
	"time"
)

// Class says what the caller should do about a failed call. Every outcome of
// a Kustomer request is classified once, here, at the edge; everything above
// (loop, worker, dlq) reads the class with [errors.As] or [ClassOf].
type Class int

const (
	// ClassNone is the zero Class: no error.
	ClassNone Class = iota
	// ClassPermanent: the request itself is wrong (400, 422, local
	// validation). Retrying cannot help; the item fails at once.
	ClassPermanent
	// ClassRetryable: a transient failure (429, 5xx, timeout, connection
	// error). Retry after [Error.RetryAfter] when it is set, else with backoff.
	ClassRetryable
	// ClassSystemic: every request would fail alike: credentials, role or
	// region (401, 403), or a base URL that does not lead to Kustomer's API
	// (a 404 on a create, an answer that is not Kustomer's JSON). The
	// workflow should pause rather than fail items.
	ClassSystemic
)

// String returns the class name used in logs, dead-letter headers and run
// records: "permanent", "retryable", "systemic".
func (c Class) String() string {
	switch c {
	case ClassPermanent:
		return "permanent"
	case ClassRetryable:
		return "retryable"
	case ClassSystemic:
		return "systemic"
	default:
		return "none"
	}
}

// Error is a classified failure of a Kustomer call. It never holds the API
// key or request headers, so it is safe to log and to dead-letter.
type Error struct {
	Op         string        // "create", "lookup", "update", "bulk"
	Class      Class         // what to do about it
	StatusCode int           // HTTP status; 0 for network errors and timeouts
	Code       string        // Kustomer error code ("badparam", "notfound"), if any
	Message    string        // human-readable reason from Kustomer or the client
	Pointer    string        // field pointer or parameter from the error body, if any
	RetryAfter time.Duration // how long to wait before retrying; 0 if unknown
	Timeout    bool          // the request was sent but no answer came: outcome unknown
	Err        error         // underlying cause (network error), if any
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("kustomer: %s: ", e.Op)
	if e.StatusCode != 0 {
		msg += fmt.Sprintf("%d ", e.StatusCode)
	}
	if e.Code != "" {
		msg += e.Code + ": "
	}
	msg += e.Message
	if e.Pointer != "" {
		msg += " (" + e.Pointer + ")"
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of err: ClassNone for nil, the Error's class when
// err wraps an *Error, and ClassPermanent for any other error (an error nobody
// classified is a bug in the request, not a reason to retry forever).
func ClassOf(err error) Class {
	if err == nil {
		return ClassNone
	}
	var ke *Error
	if errors.As(err, &ke) {
		return ke.Class
	}
	return ClassPermanent
}

// RetryAfterOf returns the delay Kustomer asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var ke *Error
	if errors.As(err, &ke) {
		return ke.RetryAfter
	}
	return 0
}
