package overflow_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/overflow"
)

// smallServer is a JetStream context on a server whose max_payload is limit.
func smallServer(t *testing.T, limit int32) jetstream.JetStream {
	t.Helper()
	srv := natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) { o.MaxPayload = limit })
	_, js := srv.Connect(t)
	return js
}

func TestMaxPayloadIsTheLimitTheServerReports(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 8<<10)
	require.Equal(t, 8<<10, overflow.MaxPayload(js))
}

func TestAMessageThatFitsIsOneJetStreamStoresAndOneThatDoesNotIsRefused(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 8<<10)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)

	h := nats.Header{"K": []string{"v"}}
	fitting := &nats.Msg{Subject: "s.a", Header: h}
	fitting.Data = bytes.Repeat([]byte("x"), overflow.MaxPayload(js)-overflow.Headroom-overflow.MsgSize(fitting))
	require.True(t, overflow.Fits(js, fitting))
	_, err = js.PublishMsg(ctx, fitting, jetstream.WithMsgID(strings.Repeat("i", 100)))
	require.NoError(t, err, "what Fits accepts, JetStream stores (with a Nats-Msg-Id)")

	over := &nats.Msg{Subject: "s.a", Header: h, Data: bytes.Repeat([]byte("x"), overflow.MaxPayload(js))}
	require.False(t, overflow.Fits(js, over))
	_, err = js.PublishMsg(ctx, over)
	require.Error(t, err, "what Fits refuses, the server refuses too")
}

func TestHeadersOverJetStreamsLimitDoNotFitWhateverTheMaxPayload(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 8<<20)
	m := &nats.Msg{Subject: "s.a", Header: nats.Header{"Big": []string{strings.Repeat("v", overflow.MaxHeaderBytes)}}}
	require.Greater(t, overflow.HeaderSize(m), overflow.MaxHeaderBytes)
	require.False(t, overflow.Fits(js, m))
	m.Header.Set("Big", "small")
	require.True(t, overflow.Fits(js, m))
}

func TestMsgSizeCountsHeadersAsEncodedAndTheBody(t *testing.T) {
	t.Parallel()
	m := &nats.Msg{Data: []byte("12345")}
	require.Equal(t, 5, overflow.MsgSize(m), "no headers: the body alone")
	m.Header = nats.Header{"Ab": []string{"cd"}}
	require.Equal(t, len("NATS/1.0\r\n\r\n")+len("Ab: cd\r\n")+5, overflow.MsgSize(m))
	require.Equal(t, len("NATS/1.0\r\n\r\nAb: cd\r\n"), overflow.HeaderSize(m))
}

func TestAnObjectLargerThanMaxPayloadIsStoredAndReadBackByteForByte(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 4<<10)
	ctx := context.Background()
	require.NoError(t, overflow.Ensure(ctx, js, overflow.Bucket{Name: "B", Limits: overflow.Limits{}.WithDefaults()}))

	data := make([]byte, 50<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(t, overflow.Put(ctx, js, "B", "big", data))
	got, err := overflow.Get(ctx, js, "B", "big")
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))

	// Put again replaces.
	require.NoError(t, overflow.Put(ctx, js, "B", "big", []byte("small")))
	got, err = overflow.Get(ctx, js, "B", "big")
	require.NoError(t, err)
	require.Equal(t, "small", string(got))
}

func TestAMissingObjectIsNotFoundAndDeletingItAgainIsNoError(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 0)
	ctx := context.Background()
	require.NoError(t, overflow.Ensure(ctx, js, overflow.Bucket{Name: "B", Limits: overflow.Limits{}.WithDefaults()}))

	_, err := overflow.Get(ctx, js, "B", "nothing")
	require.ErrorIs(t, err, jetstream.ErrObjectNotFound)
	require.True(t, strings.HasPrefix(err.Error(), "overflow: "), err.Error())

	require.NoError(t, overflow.Put(ctx, js, "B", "o", []byte("x")))
	require.NoError(t, overflow.Delete(ctx, js, "B", "o"))
	require.NoError(t, overflow.Delete(ctx, js, "B", "o"), "already gone is not an error")
	_, err = overflow.Get(ctx, js, "B", "o")
	require.ErrorIs(t, err, jetstream.ErrObjectNotFound)
}

func TestABucketThatDoesNotExistIsAnErrorNamingIt(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 0)
	err := overflow.Put(context.Background(), js, "NOPE", "o", []byte("x"))
	require.ErrorContains(t, err, "overflow: object store NOPE")
}

func TestEnsureGivesTheBucketTheLimitsOfItsStreamAndUpdatesThem(t *testing.T) {
	t.Parallel()
	js := smallServer(t, 0)
	ctx := context.Background()
	b := overflow.Bucket{Name: "B", Description: "what overflows", Limits: overflow.Limits{MaxAge: time.Hour, MaxBytes: 1 << 20, Replicas: 1}}
	require.NoError(t, overflow.Ensure(ctx, js, b))
	require.NoError(t, overflow.Ensure(ctx, js, b), "every replica may ensure it")

	obs, err := js.ObjectStore(ctx, "B")
	require.NoError(t, err)
	st, err := obs.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, time.Hour, st.TTL())
	require.Equal(t, "what overflows", st.Description())
	require.Equal(t, 1, st.Replicas())
	require.Equal(t, jetstream.FileStorage, st.Storage())

	b.Limits.MaxAge = 2 * time.Hour
	require.NoError(t, overflow.Ensure(ctx, js, b))
	st, err = obs.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, st.TTL())
}

func TestLimitsDefaultToOneGiBAndOneReplicaAndKeepTheAgeOfTheirStream(t *testing.T) {
	t.Parallel()
	require.Equal(t, overflow.Limits{MaxBytes: 1 << 30, Replicas: 1}, overflow.Limits{}.WithDefaults())
	l := overflow.Limits{MaxAge: time.Minute, MaxBytes: 5, Replicas: 3}
	require.Equal(t, l, l.WithDefaults())
}

func TestLimitsOutOfRangeAreErrorsNamingTheStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		l    overflow.Limits
		want string
	}{
		{overflow.Limits{MaxAge: -time.Second, Replicas: 1}, "dlq: stream X: negative MaxAge -1s"},
		{overflow.Limits{MaxBytes: -1, Replicas: 1}, "dlq: stream X: negative MaxBytes -1"},
		{overflow.Limits{Replicas: 0}, "dlq: stream X: Replicas 0: want 1 to 5"},
		{overflow.Limits{Replicas: 6}, "dlq: stream X: Replicas 6: want 1 to 5"},
	} {
		require.EqualError(t, tc.l.Validate("dlq: stream X"), tc.want)
	}
	require.NoError(t, overflow.Limits{}.WithDefaults().Validate("dlq: stream X"))
}
