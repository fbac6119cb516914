package dlq

import "errors"

// ErrNotFound is returned by [Store.Get] for an id that is not in the stream
// (never there, replayed or purged).
var ErrNotFound = errors.New("dlq: entry not found")

// notFoundError is a message that wraps [ErrNotFound] without repeating it.
type notFoundError string

func (e notFoundError) Error() string        { return string(e) }
func (e notFoundError) Is(target error) bool { return target == ErrNotFound }

// Errors of [LoadReplayObject] that no retry can mend.
var (
	// ErrObjectGone: the object does not exist (never stored, or removed
	// after processing).
	ErrObjectGone = errors.New("dlq: object not found")
	// ErrNotReplayObject: the name is not one a replay gives.
	ErrNotReplayObject = errors.New("dlq: not a replay object")
)

// ErrEventKeyTooLong means an entry's event key, the base of its items'
// idempotency keys (the original Nats-Msg-Id, which its publisher chose), is
// too long to travel whole in a replay's headers: a replay would not be
// recognised as the same event, and could create its items again. Such an
// entry is kept, not replayed.
var ErrEventKeyTooLong = errors.New("dlq: event key too long to replay")

// ErrUnverifiedReplay means an event carries replay headers that are not
// signed with the deployment's replay key: a publisher wrote them. The
// worker processes such an event as a new one.
var ErrUnverifiedReplay = errors.New("dlq: replay headers do not verify")
