package worker

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// Span names of the worker. An event's span is the parent of its items'
// (one per attempt), of the budget waits, ledger claims and records,
// Kustomer requests, dead letters and the ack made for it. A bulk request's
// span is a root of its own, linked to the spans of the items it carries.
const (
	spanPaused   = "ksync.paused"
	spanAck      = "ksync.ack"
	spanBulkSend = "ksync.bulk.request"
	spanBulkPoll = "ksync.bulk.poll"
)

// traceEvent starts ev's span, when the worker traces: a child of the
// trace context its publisher put in its headers (read strictly: see
// tracing.Propagator), linked, for a replay, to the span of the event it
// replays. ev's log lines then carry trace_id and span_id. It returns the
// context of the event's work.
func (w *Worker) traceEvent(ctx context.Context, f *flow, ev *event) context.Context {
	tp := w.cfg.TracerProvider
	if tp == nil {
		return ctx
	}
	attrs := []attribute.KeyValue{
		tracing.AttrMessagingSystem.String("nats"),
		tracing.AttrOperation.String("process"),
		tracing.AttrDestination.String(ev.msg.Subject()),
		tracing.AttrWorkflow.String(f.wf.Name),
		tracing.AttrStreamSeq.Int64(int64(ev.meta.Sequence.Stream)),
		tracing.AttrDelivery.Int64(int64(ev.meta.NumDelivered)),
		tracing.AttrRunID.String(ev.runID(f.wf.Name)),
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	if rp := ev.replay; rp != nil {
		attrs = append(attrs, tracing.AttrReplayOf.Int64(int64(rp.Entry)))
		if link, ok := tracing.RemoteLink(rp.TraceID, rp.SpanID, "replay_of"); ok {
			opts = append(opts, trace.WithLinks(link))
		}
	}
	parent := tracing.Extract(ctx, ev.msg.Headers())
	ctx, span := tp.Tracer(tracing.Scope).Start(parent, "process "+f.wf.Name, append(opts, trace.WithAttributes(attrs...))...)
	ev.spans.Span = span
	if tid, sid, ok := tracing.IDs(span); ok {
		ev.log = ev.log.With().Str("trace_id", tid).Str("span_id", sid).Logger()
	}
	return ctx
}

// traceItem runs one attempt at item i in a span of its own: the attempt,
// its outcome (created, already_created, updated, skipped, or how it
// failed), the customer id and the kinds of match keys of the workflow.
func (w *Worker) traceItem(ctx context.Context, f *flow, i, attempt int, fn func(context.Context) (loop.Result, error)) (loop.Result, error) {
	ctx, span := tracing.Start(ctx, tracing.SpanItem, trace.WithAttributes(tracing.AttrItem.Int(i), tracing.AttrAttempt.Int(attempt)))
	if !span.IsRecording() {
		return fn(ctx)
	}
	if len(f.wf.Match) > 0 {
		span.SetAttributes(tracing.AttrMatchKinds.String(strings.Join(f.wf.Match, ",")))
	}
	res, err := fn(ctx)
	if err == nil {
		status := res.Status
		if status == outcome.None {
			status = outcome.Created
			if res.AlreadyCreated {
				status = outcome.AlreadyCreated
			}
		}
		span.SetAttributes(tracing.AttrOutcome.String(status.String()), tracing.AttrCustomerID.String(res.CustomerID))
	} else {
		span.SetAttributes(tracing.AttrOutcome.String(loop.DecisionName(err)))
	}
	tracing.End(span, err)
	return res, err
}

// tracePaused spans the time ev is held while its workflow is paused; the
// returned function ends it.
func (ev *event) tracePaused(ctx context.Context) func() {
	_, span := tracing.Start(ctx, spanPaused)
	return func() { span.End() }
}

// ack acknowledges ev, confirmed by the server, in a span; ev's span gets
// the run's status.
func (w *Worker) ack(ctx context.Context, ev *event, status runlog.Status) error {
	if ev.spans.Span != nil {
		ev.spans.Span.SetAttributes(tracing.AttrStatus.String(string(status)))
	}
	ctx, span := tracing.Start(ctx, spanAck)
	err := ev.msg.DoubleAck(ctx)
	tracing.End(span, err)
	return err
}

// traceBulkItem starts the span of item i of ev in bulk mode: from the
// time it is handed to the batcher to its outcome (endBulkItem).
func (ev *event) traceBulkItem(ctx context.Context, f *flow, i int) trace.Span {
	return ev.spans.StartItem(ctx, i, f.wf.Match)
}

// endBulkItem ends the span of the item whose outcome is o.
func (ev *event) endBulkItem(o bulkOutcome) {
	ev.spans.EndItem(o.Index, o.Attempts, o.Status, o.CustomerID, o.job, o.Err)
}

// traceBulkRequest starts the span of one bulk request, a root linked to
// the spans of the items it carries, with the worker's provider; its polls
// are its children and carry the same links.
func (b *batcher) traceBulkRequest(ctx context.Context, items []*bulkItem) (context.Context, trace.Span) {
	tp := b.w.cfg.TracerProvider
	if tp == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	links := itemLinks(items)
	if len(links) == 0 {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = tracing.WithLinks(ctx, links)
	return tp.Tracer(tracing.Scope).Start(ctx, spanBulkSend, trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(tracing.AttrWorkflow.String(b.f.wf.Name), tracing.AttrBulkItems.Int(len(items))))
}

// traceBulkPoll starts the span of one read of bulk job id: a child of its
// request's span, or, reading an earlier attempt's job, a root linked to
// items.
func (b *batcher) traceBulkPoll(ctx context.Context, id string, items []*bulkItem) (context.Context, trace.Span) {
	attrs := trace.WithAttributes(tracing.AttrWorkflow.String(b.f.wf.Name), tracing.AttrBulkJob.String(id))
	if links := tracing.Links(ctx); len(links) > 0 { // within traceBulkRequest's span
		return tracing.Start(ctx, spanBulkPoll, attrs, trace.WithLinks(links...))
	}
	tp := b.w.cfg.TracerProvider
	links := itemLinks(items)
	if tp == nil || len(links) == 0 {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return tp.Tracer(tracing.Scope).Start(ctx, spanBulkPoll, trace.WithNewRoot(), trace.WithLinks(links...), attrs)
}

// itemLinks are the links to the sampled spans of items.
func itemLinks(items []*bulkItem) []trace.Link {
	var links []trace.Link
	for _, it := range items {
		if it.span != nil && it.span.SpanContext().IsSampled() {
			links = append(links, trace.Link{SpanContext: it.span.SpanContext()})
		}
	}
	return links
}
