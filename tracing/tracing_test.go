package tracing

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestTracingIsOffUnlessTheStandardVariablesAskForIt(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		vars map[string]string
		on   bool
	}{
		{"nothing set", nil, false},
		{"an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{"a traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"exporter none beats an endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false},
		{"SDK disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true},
		{"a ratio sampler", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := FromEnv(ctx, env(tc.vars), "v1")
			require.NoError(t, err)
			require.Equal(t, tc.on, p.Enabled())
			require.Equal(t, tc.on, p.TracerProvider() != nil)
			require.NoError(t, p.Shutdown(ctx))
		})
	}
}

func TestWrongTracingVariablesAreErrorsNamingThem(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG"},
	} {
		_, err := FromEnv(context.Background(), env(tc.vars), "")
		require.ErrorContains(t, err, tc.want)
		require.True(t, strings.HasPrefix(err.Error(), "tracing: "))
	}
}

func TestServiceNameDefaultsAndFollowsOTELServiceName(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "")
	p, err := FromEnv(context.Background(), env(map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}), "v9")
	require.NoError(t, err)
	exp := tracetest.NewInMemoryExporter()
	p.sdk.RegisterSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp))
	_, span := p.TracerProvider().Tracer("t").Start(context.Background(), "s")
	span.End()
	res := exp.GetSpans()[0].Resource
	name, _ := res.Set().Value("service.name")
	require.Equal(t, ServiceNameDefault, name.AsString())
	version, _ := res.Set().Value("service.version")
	require.Equal(t, "v9", version.AsString())

	t.Setenv("OTEL_SERVICE_NAME", "leads-sync")
	p, err = FromEnv(context.Background(), env(map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}), "v9")
	require.NoError(t, err)
	exp = tracetest.NewInMemoryExporter()
	p.sdk.RegisterSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp))
	_, span = p.TracerProvider().Tracer("t").Start(context.Background(), "s")
	span.End()
	name, _ = exp.GetSpans()[0].Resource.Set().Value("service.name")
	require.Equal(t, "leads-sync", name.AsString())
}

func TestTraceparentIsReadStrictly(t *testing.T) {
	const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	require.True(t, ValidTraceparent(ok))
	for _, bad := range []string{
		"", ok + "-", ok[:54], strings.ToUpper(ok), "01" + ok[2:], "ff" + ok[2:],
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		ok + strings.Repeat("0", 100000),
	} {
		require.False(t, ValidTraceparent(bad), bad)
		ctx := Extract(context.Background(), nats.Header{"traceparent": {bad}})
		require.False(t, trace.SpanContextFromContext(ctx).IsValid(), bad)
	}
	ctx := Extract(context.Background(), nats.Header{"Traceparent": {ok}})
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", trace.SpanContextFromContext(ctx).TraceID().String(), "names match without regard to case")
	ctx = Extract(context.Background(), nats.Header{"traceparent": {ok}, "TRACEPARENT": {ok}})
	require.False(t, trace.SpanContextFromContext(ctx).IsValid(), "two traceparents: neither is taken")
	ctx = Extract(context.Background(), nats.Header{"traceparent": {ok}, "tracestate": {"a=1,b=2"}})
	require.Equal(t, "a=1,b=2", trace.SpanContextFromContext(ctx).TraceState().String())
	ctx = Extract(context.Background(), nats.Header{"traceparent": {ok}, "tracestate": {"a=" + strings.Repeat("x", 600)}})
	require.True(t, trace.SpanContextFromContext(ctx).IsValid())
	require.Empty(t, trace.SpanContextFromContext(ctx).TraceState().String(), "an oversized tracestate is dropped")
}

func TestInjectWritesNothingWithoutATrace(t *testing.T) {
	h := nats.Header{}
	Inject(context.Background(), h)
	require.Empty(t, h)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	Inject(ctx, h)
	require.True(t, ValidTraceparent(h.Get("traceparent")))
}

func TestStartMakesSpansOnlyBelowARecordingSpan(t *testing.T) {
	ctx, span := Start(context.Background(), "x")
	require.False(t, span.IsRecording())
	require.Equal(t, context.Background(), ctx)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	pctx, parent := tp.Tracer("t").Start(context.Background(), "parent")
	_, child := Start(pctx, "child")
	require.True(t, child.IsRecording())
	child.End()
	parent.End()
	require.Len(t, exp.GetSpans(), 2)
	_, detached := Start(Detach(pctx), "none")
	require.False(t, detached.IsRecording())
}

func TestRouteLeavesOutWhoIsLookedUp(t *testing.T) {
	for path, want := range map[string][2]string{
		"/v1/customers":                         {"/v1/customers", ""},
		"/v1/customers/email=ann%40x.com":       {"/v1/customers/email={value}", ""},
		"/v1/customers/phone=%2B14155550123":    {"/v1/customers/phone={value}", ""},
		"/v1/customers/externalId=lead-1":       {"/v1/customers/externalId={value}", ""},
		"/v1/customers/5f1c0a":                  {"/v1/customers/{id}", ""},
		"/v1/customers/bulk":                    {"/v1/customers/bulk", ""},
		"/v1/bulk/job-7":                        {"/v1/bulk/{id}", "job-7"},
		"/v1/bulk/job-7/batches":                {"/v1/bulk/{id}/batches", "job-7"},
		"/v1/customers/ann@x.com/anything/more": {"/v1/customers/{path}", ""},
		"/other/ann@x.com":                      {"/{path}", ""},
	} {
		route, job := Route(path)
		require.Equal(t, want, [2]string{route, job}, path)
	}
}
