package mapping

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// Error is one mapping or validation failure of one item.
type Error struct {
	// Kind is why: [outcome.Mapping] (a template could not be evaluated: a runtime error in an
	// expression), [outcome.InvalidEvent] (a loop value that is missing or not an array) or [outcome.Validation] (the evaluated request
	// breaks a Kustomer limit or a workflow's `required` list, so Kustomer would reject it, or the user
	// asked for it to be rejected). Both are permanent: the same event always fails the same way, so
	// the item is dead-lettered, not retried.
	Kind     outcome.Outcome
	Field    string // path in the request body, e.g. "emails[3].email" or "custom.scoreNum"
	Template string // the template that produced the value, when known
	Msg      string // what is wrong, e.g. `"not-an-email" is not an email address`
	Err      error  // the cause, when there is one to find with errors.As (a *LimitError)
}

// Unwrap returns the cause, or nil.
func (e *Error) Unwrap() error { return e.Err }

// Error returns `mapping: <field>: <msg>`, followed by the template for mapping errors.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mapping: ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if (e.Kind == outcome.Mapping || e.Kind == outcome.InvalidEvent) && e.Template != "" {
		b.WriteString(" (template ")
		b.WriteString(quote(e.Template))
		b.WriteString(")")
	}
	return b.String()
}

// Errors is several failures of one item, in field order. It is never empty when returned as an error.
type Errors []*Error

// Error joins the messages with "; ".
func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Kind returns the kind of the first error, or [outcome.None] if there is none.
func (es Errors) Kind() outcome.Outcome {
	if len(es) == 0 {
		return outcome.None
	}
	return es[0].Kind
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// KindOf returns the Kind of a mapping failure anywhere in err's chain, or [outcome.None] if err is
// not one (a configuration error, for example).
func KindOf(err error) outcome.Outcome {
	var es Errors
	if errors.As(err, &es) {
		return es.Kind()
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return outcome.None
}

// FailureOf is the failure of an item whose mapping failed with err: the
// mapping failure's own kind, or [outcome.Mapping] for any other error.
func FailureOf(err error) outcome.Outcome {
	if k := KindOf(err); k.Failed() {
		return k
	}
	return outcome.Mapping
}

// asError returns nil, the only error, or all of them.
func (es Errors) asError() error {
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	default:
		return es
	}
}

// ConfigError is a problem in a config file, with its place.
type ConfigError struct {
	File         string
	Line, Column int // 0 when unknown
	Msg          string
	Err          error // the YAML library's error, if it found the problem
}

// Error returns "mapping: file:line:column: message".
func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("mapping: %s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("mapping: %s: %s", e.File, e.Msg)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigErrors is every mistake found in one config file, in file order. Parse returns it when there
// is more than one mistake (a lone mistake is a *ConfigError), so a user fixes them all in one go.
type ConfigErrors []*ConfigError

// Error returns "mapping: FILE has N mistakes:" and then each mistake on its own line, indented, as
// "file:line:column: message".
func (es ConfigErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mapping: %s has %d mistakes:", es[0].File, len(es))
	for _, e := range es {
		b.WriteString("\n  ")
		b.WriteString(strings.TrimPrefix(e.Error(), "mapping: "))
	}
	return b.String()
}

// Unwrap lets errors.As find each *ConfigError.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// LimitError is a template stopped for exceeding one of its limits: a permanent mapping failure of the item.
type LimitError struct {
	What string // "steps", "time" or "text"
	Msg  string
}

func (e *LimitError) Error() string { return e.Msg }

// evalError is a template that failed at run time.
type evalError struct {
	src string
	err error
}

func (e *evalError) Error() string { return e.err.Error() }

func (e *evalError) Unwrap() error { return e.err }
