package tracing

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestAMessageNotTracedMakesNoSpanAndCarriesNoIDs(t *testing.T) {
	t.Parallel()
	var m Message
	require.Nil(t, m.StartItem(context.Background(), 0, nil))
	h := nats.Header{}
	m.Inject(h, "Ksync-Trace-Id")
	require.Empty(t, h)
	require.Empty(t, m.TraceID())
	m.Fail("ack", errors.New("x"))
	m.End()
}

func TestAMessagesItemsStillWaitingWhenItEndsEndAsCanceled(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	ctx, span := tp.Tracer(Scope).Start(context.Background(), "process wf")
	m := Message{Span: span}
	require.NotNil(t, m.StartItem(ctx, 0, []string{"email"}))
	require.NotNil(t, m.StartItem(ctx, 1, nil))
	m.EndItem(0, 2, outcome.Created, "c-1", "job-1", nil)
	h := nats.Header{}
	m.Inject(h, "Ksync-Trace-Id")
	require.Equal(t, m.TraceID(), h.Get("Ksync-Trace-Id"))
	require.NotEmpty(t, h.Get(HeaderTraceparent))
	m.End()

	outcomes := map[string]string{}
	for _, s := range exp.GetSpans() {
		for _, a := range s.Attributes {
			if a.Key == AttrOutcome {
				outcomes[s.Name+" "+a.Value.Emit()] = a.Value.AsString()
			}
		}
	}
	require.Equal(t, map[string]string{"ksync.item created": "created", "ksync.item canceled": "canceled"}, outcomes)
	require.Len(t, exp.GetSpans(), 3, "both items and the message")
}

func TestARemoteLinkNeedsAValidTraceAndSpan(t *testing.T) {
	t.Parallel()
	link, ok := RemoteLink("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "replay_of")
	require.True(t, ok)
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", link.SpanContext.TraceID().String())
	require.Equal(t, "replay_of", link.Attributes[0].Value.AsString())
	_, ok = RemoteLink("", "00f067aa0ba902b7", "replay_of")
	require.False(t, ok)
	_, ok = RemoteLink("4bf92f3577b34da6a3ce929d0e0e4736", "", "replay_of")
	require.False(t, ok, "no span: nothing to link to")
}
