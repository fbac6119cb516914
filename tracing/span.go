package tracing

import (
	"context"
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of kustomer-sync's own spans.
const Scope = "github.com/kustomer-sync/kustomer-sync"

// Attribute keys of kustomer-sync's spans. None holds personal data.
const (
	AttrWorkflow   = attribute.Key("ksync.workflow")
	AttrRunID      = attribute.Key("ksync.run_id")
	AttrStatus     = attribute.Key("ksync.status")
	AttrItem       = attribute.Key("ksync.item.index")
	AttrAttempt    = attribute.Key("ksync.item.attempt")
	AttrOutcome    = attribute.Key("ksync.item.outcome")
	AttrCustomerID = attribute.Key("ksync.customer_id")
	AttrMatchKinds = attribute.Key("ksync.match.kinds")
	AttrBulkJob    = attribute.Key("ksync.bulk.job_id")
	AttrBulkItems  = attribute.Key("ksync.bulk.items")
	AttrDLQClass   = attribute.Key("ksync.dead_letter.class")
	AttrReplayOf   = attribute.Key("ksync.replay_of")
	// Messaging semantic conventions.
	AttrMessagingSystem = attribute.Key("messaging.system")
	AttrDestination     = attribute.Key("messaging.destination.name")
	AttrOperation       = attribute.Key("messaging.operation.type")
	AttrStreamSeq       = attribute.Key("messaging.nats.stream_sequence")
	AttrDelivery        = attribute.Key("messaging.nats.delivery_count")
)

var noop = trace.SpanFromContext(context.Background())

// Start starts a child of the span in ctx, with that span's provider, when
// that span is recording; otherwise it returns ctx and a span that records
// nothing, at no cost. So code below an event's span makes spans only when
// the event is traced and sampled.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noop
	}
	return parent.TracerProvider().Tracer(Scope).Start(ctx, name, opts...)
}

// Detach returns ctx without its span: what long-lived work started by one
// event but done for many (a bulk batcher) runs with.
func Detach(ctx context.Context) context.Context { return trace.ContextWithSpan(ctx, noop) }

// End ends span, marking it failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// IDs returns the hex trace and span ids of span when it is sampled: what
// log lines and records carry.
func IDs(span trace.Span) (traceID, spanID string, ok bool) {
	sc := span.SpanContext()
	if !sc.IsValid() || !sc.IsSampled() {
		return "", "", false
	}
	return sc.TraceID().String(), sc.SpanID().String(), true
}

type linksKey struct{}

// WithLinks returns ctx carrying links, for the spans started below it
// that should link where their parent does (a bulk job's polls, to the
// items the job carries).
func WithLinks(ctx context.Context, links []trace.Link) context.Context {
	return context.WithValue(ctx, linksKey{}, links)
}

// Links returns the links ctx carries ([WithLinks]).
func Links(ctx context.Context) []trace.Link {
	l, _ := ctx.Value(linksKey{}).([]trace.Link)
	return l
}

// Transport wraps base (http.DefaultTransport when nil) in otelhttp's
// client instrumentation: a client span per request, with the HTTP
// semantic conventions, a child of the span in the request's context and
// made with its provider, and only when that span is recording. A
// Kustomer look-up's path holds the email or phone looked up, so the span's
// name and url.full name the route instead ("/v1/customers/email={value}");
// a bulk job's id is put in ksync.bulk.job_id.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return otelhttp.NewTransport(redactor{base},
		otelhttp.WithPropagators(Propagator),
		otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanFromContext(r.Context()).IsRecording() }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			route, _ := Route(r.URL.Path)
			return r.Method + " " + route
		}))
}

// redactor overwrites the URL otelhttp recorded with its route.
type redactor struct{ base http.RoundTripper }

func (t redactor) RoundTrip(r *http.Request) (*http.Response, error) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		route, job := Route(r.URL.Path)
		span.SetAttributes(attribute.String("url.full", r.URL.Scheme+"://"+r.URL.Host+route), attribute.String("url.template", route))
		if job != "" {
			span.SetAttributes(AttrBulkJob.String(job))
		}
	}
	return t.base.RoundTrip(r)
}

// Route is the template of a Kustomer API path, with what identifies a
// person or a record replaced: "/v1/customers/email={value}",
// "/v1/customers/{id}", "/v1/bulk/{id}/batches"; and the bulk job id of a
// /v1/bulk/ path. A path of another shape is reduced to its first two
// segments.
func Route(path string) (route, bulkJob string) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return "/{path}", ""
	}
	segs := strings.Split(rest, "/")
	switch {
	case len(segs) == 1:
		return "/v1/" + segs[0], ""
	case segs[0] == "customers" && len(segs) == 2:
		if segs[1] == "bulk" {
			return "/v1/customers/bulk", ""
		}
		if field, _, isLookup := strings.Cut(segs[1], "="); isLookup && isField(field) {
			return "/v1/customers/" + field + "={value}", ""
		}
		return "/v1/customers/{id}", ""
	case segs[0] == "bulk" && len(segs) == 2:
		return "/v1/bulk/{id}", segs[1]
	case segs[0] == "bulk" && len(segs) == 3 && segs[2] == "batches":
		return "/v1/bulk/{id}/batches", segs[1]
	}
	return "/v1/" + segs[0] + "/{path}", ""
}

// isField reports whether f is a look-up field name of a path (externalId,
// email, phone), so that it may be named in the route.
func isField(f string) bool {
	if f == "" || len(f) > 32 {
		return false
	}
	for _, c := range f {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
