package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The W3C Trace Context headers, on NATS messages as on HTTP requests.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// Bounds of what is read from a publisher: a traceparent of version 00 is
// exactly 55 characters; a tracestate of more than 512 characters or 32
// members is dropped (W3C allows a vendor to drop it), keeping the
// traceparent.
const (
	traceparentLen   = 55
	maxTracestateLen = 512
	maxTracestateMem = 32
)

// MaxHeaderBytes bounds what [Inject] adds to a NATS message's headers as
// encoded: a traceparent and a tracestate within the bounds above.
const MaxHeaderBytes = len(HeaderTraceparent+": \r\n") + traceparentLen + len(HeaderTracestate+": \r\n") + maxTracestateLen

// Propagator is W3C Trace Context, read strictly: a traceparent that is
// not exactly version 00's lowercase "00-<32 hex>-<16 hex>-<2 hex>" with
// non-zero ids, or that comes more than once, is ignored (the span starts
// a trace of its own); a tracestate over the bounds is dropped. What it
// extracts is only ever a parent or a link: nothing else reads it.
var Propagator propagation.TextMapPropagator = strict{}

type strict struct{}

func (strict) Inject(ctx context.Context, c propagation.TextMapCarrier) {
	propagation.TraceContext{}.Inject(ctx, c)
}

func (strict) Fields() []string { return []string{HeaderTraceparent, HeaderTracestate} }

func (strict) Extract(ctx context.Context, c propagation.TextMapCarrier) context.Context {
	tp, ok := single(c, HeaderTraceparent)
	if !ok || !ValidTraceparent(tp) {
		return ctx
	}
	ts, ok := single(c, HeaderTracestate)
	if !ok || len(ts) > maxTracestateLen || strings.Count(ts, ",") >= maxTracestateMem {
		ts = ""
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{HeaderTraceparent: tp, HeaderTracestate: ts})
}

// single is the one value of key in c; ok is false when it comes more than
// once (a list, or several header lines).
func single(c propagation.TextMapCarrier, key string) (string, bool) {
	if vc, isValues := c.(propagation.ValuesGetter); isValues {
		vs := vc.Values(key)
		switch len(vs) {
		case 0:
			return "", true
		case 1:
			return vs[0], true
		default:
			return "", false
		}
	}
	return c.Get(key), true
}

// ValidTraceparent reports whether s is a W3C traceparent of version 00,
// exactly: lowercase hex, non-zero trace and span ids.
func ValidTraceparent(s string) bool {
	if len(s) != traceparentLen || s[0] != '0' || s[1] != '0' || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	hex := func(from, to int) (nonZero bool) {
		for i := from; i < to; i++ {
			c := s[i]
			switch {
			case c >= '1' && c <= '9' || c >= 'a' && c <= 'f':
				nonZero = true
			case c == '0':
			default:
				return false
			}
		}
		return nonZero
	}
	okFlags := true
	for i := 53; i < 55; i++ {
		c := s[i]
		okFlags = okFlags && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
	}
	return hex(3, 35) && hex(36, 52) && okFlags
}

// NATSCarrier reads and writes the trace headers of a NATS message. Header
// names are matched without regard to case, as HTTP's are, so that a
// "Traceparent" and a "traceparent" count as two values of one header.
type NATSCarrier nats.Header

func (c NATSCarrier) Get(key string) string {
	if vs := c.Values(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (c NATSCarrier) Values(key string) []string {
	var out []string
	for k, vs := range c {
		if strings.EqualFold(k, key) {
			out = append(out, vs...)
		}
	}
	return out
}

func (c NATSCarrier) Set(key, value string) {
	for k := range c {
		if strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

func (c NATSCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx into h as traceparent and
// tracestate; it writes nothing when ctx holds no valid span context (as
// when tracing is off).
func Inject(ctx context.Context, h nats.Header) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	Propagator.Inject(ctx, NATSCarrier(h))
}

// Extract returns ctx with the remote span context of h, read by
// [Propagator]; ctx itself when h has none that is valid.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, NATSCarrier(h))
}
