package dlq_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// A dead letter keeps the trace and span ids of the event's span; its
// replay carries them, signed, for the replay's span to link to; edited,
// the replay does not verify. An entry without them replays without them.
func TestADeadLettersTraceTravelsSignedWithItsReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := rec("signup", outcome.Exhausted, 7, `{"id":"a"}`)
	r.TraceID, r.SpanID = traceID, spanID
	b.publish(t, r)
	bad := rec("signup", outcome.Exhausted, 8, `{"id":"b"}`)
	bad.TraceID, bad.SpanID = "NOT-HEX", "00f067aa0ba902b7-too-long"
	b.publish(t, bad)
	plain := rec("signup", outcome.Exhausted, 9, `{"id":"c"}`)
	b.publish(t, plain)

	entries, err := b.store.List(ctx, dlq.Filter{All: true})
	require.NoError(t, err)
	require.Len(t, entries, 3)
	require.Equal(t, [2]string{traceID, spanID}, [2]string{entries[0].TraceID, entries[0].SpanID})
	require.Empty(t, entries[1].TraceID+entries[1].SpanID, "ids that are not hex of their length are not kept")
	require.Empty(t, entries[2].TraceID)

	_, err = b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.NoError(t, err)
	msgs := consumeLeads(t, b)
	require.Len(t, msgs, 3)
	key, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
	require.NoError(t, err)
	var traced *jetstream.RawStreamMsg
	for _, m := range msgs {
		rp, err := key.ReadReplay(m.Subject, m.Header, m.Data)
		require.NoError(t, err)
		if rp.TraceID != "" {
			require.Equal(t, [2]string{traceID, spanID}, [2]string{rp.TraceID, rp.SpanID})
			traced = m
		}
	}
	require.NotNil(t, traced)
	h := nats.Header{}
	for k, v := range traced.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Set(dlq.HeaderReplayTrace, "4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7")
	_, err = key.ReadReplay(traced.Subject, h, traced.Data)
	require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, "an edited trace")
	h.Del(dlq.HeaderReplayTrace)
	_, err = key.ReadReplay(traced.Subject, h, traced.Data)
	require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, "a removed trace")
}
