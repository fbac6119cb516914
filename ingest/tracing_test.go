package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// A traced ingest endpoint continues the request's trace context into the
// events it stores; a forged or oversized traceparent starts a trace of
// its own; an untraced one stores no trace headers.
func TestIngestCarriesTheRequestsTraceContextIntoTheEventReadStrictly(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e := newIngestEnv(t, func(c *HandlerConfig) { c.TracerProvider = tp })
	stored := func(seq float64) (trace.SpanContext, string) {
		m, err := e.st.GetMsg(context.Background(), uint64(seq))
		require.NoError(t, err)
		tp := m.Header.Get("traceparent")
		require.True(t, tracing.ValidTraceparent(tp), "stored traceparent %q", tp)
		sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Header))
		return sc, tp
	}
	const incoming = "4bf92f3577b34da6a3ce929d0e0e4736"
	status, body, _ := e.post("/v1/events/signup", `{"id":"t-1"}`, "traceparent", "00-"+incoming+"-00f067aa0ba902b7-01")
	require.Equal(t, 202, status)
	sc, _ := stored(body["sequences"].([]any)[0].(float64))
	require.Equal(t, incoming, sc.TraceID().String(), "the request's trace goes on")
	server := exp.GetSpans()[len(exp.GetSpans())-1]
	require.Equal(t, trace.SpanKindServer, server.SpanKind)
	require.Equal(t, "00f067aa0ba902b7", server.Parent.SpanID().String())
	require.Equal(t, "POST /v1/events/{workflow}", server.Name)

	for i, forged := range []string{
		"00-" + incoming + "-00f067aa0ba902b7-01" + strings.Repeat("0", 4000),
		"00-" + strings.ToUpper(incoming) + "-00f067aa0ba902b7-01",
		"zz-" + incoming + "-00f067aa0ba902b7-01",
	} {
		status, body, _ := e.post("/v1/events/signup", `{"id":"f-`+string(rune('a'+i))+`"}`, "traceparent", forged)
		require.Equal(t, 202, status)
		sc, _ := stored(body["sequences"].([]any)[0].(float64))
		require.NotEqual(t, incoming, sc.TraceID().String(), "case %d: a trace of its own", i)
	}

	plain := newIngestEnv(t, nil)
	status, body, _ = plain.post("/v1/events/signup", `{"id":"p-1"}`, "traceparent", "00-"+incoming+"-00f067aa0ba902b7-01")
	require.Equal(t, 202, status)
	m, err := plain.st.GetMsg(context.Background(), uint64(body["sequences"].([]any)[0].(float64)))
	require.NoError(t, err)
	require.Empty(t, m.Header.Get("traceparent"), "untraced: a publisher's header is not passed on")
}
