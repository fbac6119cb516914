package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

func TestRunsShowPrintsTheTraceID(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	now := time.Now()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	b.writeRun(t, runlog.Record{
		ID: "LEADS-3-1-default", Workflow: "default", EventID: "lead-3", StreamSeq: 3, Started: now, Ended: now,
		Status: runlog.Succeeded, TraceID: traceID,
	})
	requireShowsTrace(t, b, traceID, "runs", "show", "LEADS-3-1-default")
}

// requireShowsTrace wants the command args to print traceID, as text and
// with --json.
func requireShowsTrace(t *testing.T, b cliBundle, traceID string, args ...string) {
	t.Helper()
	out, _, err := b.cli(t, "", args...)
	require.NoError(t, err)
	require.Regexp(t, `Trace\s+`+traceID+`\n`, out)
	out, _, err = b.cli(t, "", append(args, "--json")...)
	require.NoError(t, err)
	require.Contains(t, out, `"trace_id": "`+traceID+`"`)
}

func TestDLQShowPrintsTheTraceID(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	require.NoError(t, dlq.Publish(context.Background(), b.js, dlq.Subject("signup"), dlq.Record{
		Workflow: "signup", Class: outcome.Permanent, Error: "it broke", Attempts: 1, Subject: "leads.signup", StreamSeq: 5,
		LastFailure: time.Now(), Payload: []byte(`{}`), TraceID: traceID, SpanID: spanID,
	}))
	requireShowsTrace(t, b, traceID, "dlq", "show", "1")
}

func TestTraceURLTemplateIsCheckedAndDocumented(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ value, want string }{
		{"https://jaeger.example/trace/", "want a URL holding {trace_id}"},
		{"jaeger.example/trace/{trace_id}", "want an http(s) URL"},
		{"ftp://jaeger.example/{trace_id}", "want an http(s) URL"},
	} {
		_, _, err := cli(t, "", "run", "--sandbox", "--nats-url", "nats://127.0.0.1:1", "--trace-url-template", c.value)
		require.ErrorContains(t, err, "--trace-url-template")
		require.ErrorContains(t, err, c.want)
		require.Equal(t, 2, exitCode(err))
	}
	help, _, err := cli(t, "", "run", "--help")
	require.NoError(t, err)
	require.Contains(t, help, "--trace-url-template")
	require.Contains(t, help, "KSYNC_TRACE_URL_TEMPLATE")
	require.Equal(t, "https://jaeger.example/trace/abc", traceURL("https://jaeger.example/trace/{trace_id}")("abc"))
	require.Nil(t, traceURL(""))
}

func TestWrongOTELVariablesStopRunWithAUsageError(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	_, _, err := cli(t, "", "run", "--sandbox", "--nats-url", "nats://127.0.0.1:1", "--startup-timeout", "1s")
	require.ErrorContains(t, err, "OTEL_TRACES_EXPORTER")
	require.Equal(t, 2, exitCode(err))
	require.False(t, strings.Contains(err.Error(), "*"), "no Go type names")
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, publish puts its trace context on
// every event and exports its spans before it exits.
func TestPublishWithAnOTLPEndpointTracesItsEventsAndExportsBeforeExiting(t *testing.T) {
	var exports atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			exports.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	b := newCLIBundle(t)
	_, _, err := b.cli(t, `{"id":"t-1","name":"Ann"}`+"\n"+`{"id":"t-2","name":"Bo"}`, "publish", "--subject", "leads.web")
	require.NoError(t, err)
	require.Positive(t, exports.Load(), "the spans were exported before publish returned")
	var traceIDs []string
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := b.leads.GetMsg(context.Background(), seq)
		require.NoError(t, err)
		tp := m.Header.Get("traceparent")
		require.True(t, tracing.ValidTraceparent(tp), "event %d: traceparent %q", seq, tp)
		traceIDs = append(traceIDs, tp[3:35])
	}
	require.Equal(t, traceIDs[0], traceIDs[1], "one publish, one trace")

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	_, _, err = b.cli(t, `{"id":"t-3","name":"Cy"}`, "publish", "--subject", "leads.web")
	require.NoError(t, err)
	m, err := b.leads.GetMsg(context.Background(), 3)
	require.NoError(t, err)
	require.Empty(t, m.Header.Get("traceparent"), "tracing off: no trace headers")
}
