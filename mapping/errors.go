package mapping

import (
	"errors"
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
	Err      error  // the cause, when there is one to find with errors.As (a *BudgetError)
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
