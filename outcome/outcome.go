// Package outcome names how one item of an event ended: created, found
// created before, failed (and why), or left unfinished. It is the one
// vocabulary the Loop's reports, the run log, the dead letters, the metrics
// and the CLI share, so each reads the same typed value instead of a string
// of its own.
//
// An Outcome marshals to the same words the run log and dead letters always
// held ("created", "permanent", "max_deliveries"...), as JSON and as text
// (headers, metric labels, flags, map keys), so records written before it
// existed read back unchanged. The package is pure: it imports nothing of
// the module, so `loop`, `mapping` and `dlq` can all use it.
package outcome

import (
	"fmt"
	"slices"
	"strings"
)

// Outcome is how an item ended. The zero value, [None], is "not decided
// yet"; it marshals to "" and is left out of JSON under omitempty.
type Outcome uint8

const (
	// None is the zero Outcome: no outcome yet.
	None Outcome = iota

	// Created: the item's customer was created.
	Created
	// AlreadyCreated: the customer existed already (recorded in the
	// ledger, or found by a look-up after an unknown outcome); nothing was
	// created twice.
	AlreadyCreated
	// Updated: a workflow with match found the customer and updated it
	// (on_match: update).
	Updated
	// Skipped: a workflow with match found the customer and left it as it
	// was (on_match: skip).
	Skipped

	// InvalidEvent: the event is poison (not JSON, not an object, too
	// large, a replay whose object is gone). Dead-lettered at once.
	InvalidEvent
	// Mapping: the workflow's templates could not be applied to the event
	// (a run-time error in an expression, a loop value that is not an
	// array).
	Mapping
	// Validation: the mapped customer breaks Kustomer's schema or the
	// workflow's required inputs (checked locally, before any request).
	Validation
	// Permanent: Kustomer refused the request (400, 422...); retrying
	// cannot help.
	Permanent
	// Exhausted: transient failures outlasted every attempt.
	Exhausted
	// MaxDeliveries: JetStream gave up redelivering the event (the worker
	// crashed or hung on it MaxDeliver times).
	MaxDeliveries

	// Paused: not finished because the workflow paused (a systemic
	// failure or an open breaker); the event comes back later.
	Paused
	// Canceled: not finished because the run was stopped (shutdown).
	Canceled
)

// names are the wire words, indexed by Outcome.
var names = [...]string{
	None:           "",
	Created:        "created",
	AlreadyCreated: "already_created",
	Updated:        "updated",
	Skipped:        "skipped",
	InvalidEvent:   "invalid_event",
	Mapping:        "mapping",
	Validation:     "validation",
	Permanent:      "permanent",
	Exhausted:      "exhausted",
	MaxDeliveries:  "max_deliveries",
	Paused:         "paused",
	Canceled:       "canceled",
}

// Failures lists the failures — the classes of a dead letter — in the
// order tools display them.
var Failures = []Outcome{InvalidEvent, Mapping, Validation, Permanent, Exhausted, MaxDeliveries}

// String returns o's wire word ("already_created", "permanent"), "" for
// None, and "outcome(N)" for a value that is not an Outcome.
func (o Outcome) String() string {
	if int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Succeeded reports whether the item has a customer: Created,
// AlreadyCreated, Updated or Skipped.
func (o Outcome) Succeeded() bool { return o >= Created && o <= Skipped }

// Failed reports whether o is one of [Failures]: the item failed for good
// and belongs in a dead letter.
func (o Outcome) Failed() bool { return o >= InvalidEvent && o <= MaxDeliveries }

// Summary is o as the run log's item "outcome" field and the items metric's
// "outcome" label have always said it: "created", "already_created",
// "failed" for every failure, "paused", "canceled", or "" for None. The
// failure itself is the item's class.
func (o Outcome) Summary() string {
	if o.Failed() {
		return "failed"
	}
	return o.String()
}

// Parse returns the Outcome whose wire word is s. The empty string is None.
func Parse(s string) (Outcome, error) {
	if i := slices.Index(names[:], s); i >= 0 {
		return Outcome(i), nil
	}
	return None, fmt.Errorf("outcome: %q is not an outcome: want one of %s", s, list(Created, AlreadyCreated, Updated, Skipped, Paused, Canceled))
}

// ParseFailure returns the failure whose wire word is s, as a dead
// letter's class or a --class flag names it.
func ParseFailure(s string) (Outcome, error) {
	if o, err := Parse(s); err == nil && o.Failed() {
		return o, nil
	}
	return None, fmt.Errorf("outcome: %q is not a failure class: want one of %s", s, list())
}

// list is every failure's word and extra's, comma-separated.
func list(extra ...Outcome) string {
	var words []string
	for _, o := range append(slices.Clone(extra), Failures...) {
		words = append(words, o.String())
	}
	return strings.Join(words, ", ")
}

// MarshalText returns o's wire word; an Outcome that is not one is an error.
func (o Outcome) MarshalText() ([]byte, error) {
	if int(o) >= len(names) {
		return nil, fmt.Errorf("outcome: marshal: %d is not an outcome", o)
	}
	return []byte(names[o]), nil
}

// UnmarshalText reads a wire word, as [Parse] does.
func (o *Outcome) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*o = v
	return nil
}
