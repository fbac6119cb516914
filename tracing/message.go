package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// SpanItem names the span of one item of a message: of one attempt, or in
// bulk mode from the time it is handed to a batch to its outcome.
const SpanItem = "ksync.item"

// Message is the spans of one message being processed: its own (Span), and
// the spans of its items still waiting for an outcome from work done for
// many messages (a bulk batch), by index. The zero value, of a message not
// traced, makes no span and carries no ids. Not safe for concurrent use.
type Message struct {
	// Span is the message's span; nil when it is not traced.
	Span  trace.Span
	items map[int]trace.Span
}

// End ends the message's span, if it has one, and the spans of its items
// still waiting for an outcome (the worker stopped meanwhile), as
// canceled.
func (m *Message) End() {
	for i, span := range m.items {
		span.SetAttributes(AttrOutcome.String(outcome.Canceled.String()))
		span.End()
		delete(m.items, i)
	}
	if m.Span != nil {
		m.Span.End()
	}
}

// TraceID is the trace id of the message's span, when it is sampled: what
// its run record, dead letters and results carry.
func (m *Message) TraceID() string {
	tid, _ := m.IDs()
	return tid
}

// IDs are the trace and span ids of the message's span, when it is
// sampled, for a dead letter.
func (m *Message) IDs() (traceID, spanID string) {
	if m.Span == nil {
		return "", ""
	}
	tid, sid, _ := IDs(m.Span)
	return tid, sid
}

// Fail marks the message's span failed at step (the message was nak'ed).
func (m *Message) Fail(step string, err error) {
	if m.Span != nil && m.Span.IsRecording() {
		m.Span.SetStatus(codes.Error, step+": "+err.Error())
	}
}

// Inject puts the message's trace context on a message derived from it (a
// result): its traceparent, and its trace id under traceIDHeader.
func (m *Message) Inject(h nats.Header, traceIDHeader string) {
	if tid := m.TraceID(); tid != "" {
		Inject(trace.ContextWithSpan(context.Background(), m.Span), h)
		h.Set(traceIDHeader, tid)
	}
}

// StartItem starts the span of item i, a child of the span in ctx, kept
// until [Message.EndItem]; matchKinds are the kinds of match keys its
// workflow looks customers up by. It returns nil when the item is not
// traced.
func (m *Message) StartItem(ctx context.Context, i int, matchKinds []string) trace.Span {
	_, span := Start(ctx, SpanItem, trace.WithAttributes(AttrItem.Int(i)))
	if !span.IsRecording() {
		return nil
	}
	if len(matchKinds) > 0 {
		span.SetAttributes(AttrMatchKinds.String(strings.Join(matchKinds, ",")))
	}
	if m.items == nil {
		m.items = map[int]trace.Span{}
	}
	m.items[i] = span
	return span
}

// EndItem ends the span of item i, whose outcome is status after attempts,
// with its customer and bulk job when known; err marks it failed.
func (m *Message) EndItem(i, attempts int, status outcome.Outcome, customerID, job string, err error) {
	span := m.items[i]
	if span == nil {
		return
	}
	delete(m.items, i)
	if span.IsRecording() {
		span.SetAttributes(AttrAttempt.Int(attempts), AttrOutcome.String(status.String()))
		if customerID != "" {
			span.SetAttributes(AttrCustomerID.String(customerID))
		}
		if job != "" {
			span.SetAttributes(AttrBulkJob.String(job))
		}
	}
	End(span, err)
}

// RemoteLink is a link, with attribute ksync.link=kind, to the span that
// traceID and spanID (hex, as records carry them) name: of a message
// processed before, such as the original of a replay. It returns false
// when they name no valid span.
func RemoteLink(traceID, spanID, kind string) (trace.Link, bool) {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return trace.Link{}, false
	}
	sid, _ := trace.SpanIDFromHex(spanID)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, Remote: true, TraceFlags: trace.FlagsSampled})
	if !sc.IsValid() {
		return trace.Link{}, false
	}
	return trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("ksync.link", kind)}}, true
}
