package mapping

import (
	"cmp"
	"errors"
	"strings"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// Request is the JSON-ready body of POST /v1/customers for one item: inputs normalised and validated,
// blank inputs absent. Values are string, float64, bool, []any and map[string]any, as encoding/json
// decodes them, so a Request compares equal to its own JSON round trip.
type Request map[string]any

// ExternalID returns the request's externalId, or "".
func (r Request) ExternalID() string {
	s, _ := r["externalId"].(string)
	return s
}

// env is what the templates of one evaluation see, with a fresh meter (TemplateMaxSteps, …) that
// they share.
func (w *Workflow) env(trigger map[string]any, item any, index int) *env {
	return &env{
		Trigger:  trigger,
		Item:     item,
		Loop:     loopEnv{Index: index},
		Workflow: workflowEnv{Name: w.Name, Subject: w.Subject},
		meter:    newMeter(),
	}
}

// mappingError turns a template run-time failure into an *Error of outcome.Mapping.
func mappingError(field string, t *tmpl, err error) *Error {
	src := t.src
	var ee *evalError
	if errors.As(err, &ee) && ee.src != "" {
		src = ee.src
	}
	e := &Error{Kind: outcome.Mapping, Field: field, Template: src, Msg: err.Error()}
	var be *LimitError
	if errors.As(err, &be) {
		e.Err = be
	}
	return e
}

// Items evaluates the workflow's loop expression against the event. Without a loop it returns one nil
// item. A loop value that is missing (nil) gives no items. It fails with an [outcome.Mapping] *Error if the value
// is not an array, and with an [outcome.Validation] *Error if it holds more than MaxItems items.
func (w *Workflow) Items(trigger map[string]any) ([]any, error) {
	if w.loop == nil {
		return []any{nil}, nil
	}
	v, err := w.loop.eval(w.env(trigger, nil, 0))
	if err != nil {
		return nil, mappingError("loop", w.loop, err)
	}
	if v == nil {
		return []any{}, nil
	}
	items, ok := toSlice(v)
	if !ok {
		return nil, &Error{Kind: outcome.Mapping, Field: "loop", Template: w.loop.src, Msg: "expected an array, got " + describe(v)}
	}
	if max := cmp.Or(w.MaxItems, MaxItemsDefault); len(items) > max {
		return nil, &Error{Kind: outcome.Validation, Field: "loop", Template: w.loop.src,
			Msg: itoa(len(items)) + " items, at most " + itoa(max) + " allowed (max_items)"}
	}
	return items, nil
}

// Map builds the validated, normalised Kustomer create body for one item (item nil and index 0 without a
// loop). On failure it returns an *Error, or Errors when there are several, naming each field path; both
// are permanent for this item. A request with no input at all is a validation error too: Kustomer would
// accept it, but an empty customer helps nobody. It does no I/O; a typical lead costs a few microseconds.
func (w *Workflow) Map(trigger map[string]any, item any, index int) (Request, error) {
	e := w.env(trigger, item, index)
	c := checker{region: cmp.Or(w.DefaultRegion, DefaultRegionDefault)}
	req := make(Request, len(w.inputs))
	for _, in := range w.inputs {
		c.template = in.t.src
		var val any
		if in.name == "custom" && in.t.kind == tmplObject {
			val = w.mapCustom(&c, e, in.t)
		} else {
			if v, err := in.t.eval(e); err != nil {
				c.errs = append(c.errs, mappingError(in.name, in.t, err))
			} else {
				val = in.norm(&c, in.name, v)
			}
		}
		if val != nil {
			req[in.name] = val
		}
		if e.meter.err != nil {
			// The item reached a limit: the inputs left would each fail the same way.
			return nil, c.errs.asError()
		}
	}
	for _, name := range w.required {
		if !present(req, name) {
			in, _ := w.input(strings.Split(name, ".")[0])
			src := in.t.src
			if top, sub, ok := strings.Cut(name, "."); ok && top == "custom" && in.t.kind == tmplObject {
				for i, k := range in.t.keys {
					if k == sub {
						src = in.t.children[i].src
					}
				}
			}
			c.errs = append(c.errs, &Error{Kind: outcome.Validation, Field: name, Template: src, Msg: "required, but blank"})
		}
	}
	if len(c.errs) == 0 && len(req) == 0 {
		// Every input is optional, but a customer with none of them is only
		// noise in the CRM: refuse it with a reason a person understands.
		c.errs = append(c.errs, &Error{Kind: outcome.Validation, Msg: "every input is blank, so there is no customer to create (does the event have the fields the workflow maps?)"})
	}
	if len(c.errs) > 0 {
		return nil, c.errs.asError()
	}
	return req, nil
}

// mapCustom evaluates custom attributes key by key, so that errors name each key's own template.
func (w *Workflow) mapCustom(c *checker, e *env, t *tmpl) any {
	out := make(map[string]any, len(t.keys))
	for i, k := range t.keys {
		child := t.children[i]
		c.template = child.src
		path := "custom." + k
		v, err := child.eval(e)
		if err != nil {
			c.errs = append(c.errs, mappingError(path, child, err))
		} else if val := c.customValue(path, k, v); val != nil {
			out[k] = val
		}
		if e.meter.err != nil {
			break
		}
	}
	return c.customDone("custom", out)
}

func present(req Request, name string) bool {
	top, sub, ok := strings.Cut(name, ".")
	v, has := req[top]
	if !ok || !has {
		return has
	}
	m, _ := v.(map[string]any)
	_, has = m[sub]
	return has
}

// IdempotencyKey evaluates the workflow's idempotency_key template (if configured) for the item; if there
// is none or it is blank, it returns the request's externalId, else "" (the caller falls back to the
// message id and the item's index).
func (w *Workflow) IdempotencyKey(trigger map[string]any, item any, index int, req Request) (string, error) {
	if w.idemKey != nil {
		v, err := w.idemKey.eval(w.env(trigger, item, index))
		if err != nil {
			return "", mappingError("idempotency_key", w.idemKey, err)
		}
		if !isBlank(v) {
			s, ok := scalarString(v)
			if !ok {
				return "", &Error{Kind: outcome.Mapping, Field: "idempotency_key", Template: w.idemKey.src,
					Msg: "expected text, got " + describe(v)}
			}
			return strings.TrimSpace(s), nil
		}
	}
	return req.ExternalID(), nil
}

func itoa(n int) string {
	s, _ := scalarString(n)
	return s
}
