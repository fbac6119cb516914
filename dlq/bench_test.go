package dlq_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// BenchmarkPublish measures dead-lettering one failure (publish and wait
// for JetStream's ack, file storage).
func BenchmarkPublish(b *testing.B) {
	_, js := natstest.Start(b).Connect(b)
	ctx := context.Background()
	_, err := dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(b, err)
	r := rec("signup", outcome.Exhausted, 0, `{"name":"Ada Lovelace","emails":[{"email":"ada@example.com"}]}`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.StreamSeq = uint64(i + 1)
		if err := dlq.Publish(ctx, js, "dlq.signup", r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList measures listing (scanning and decoding) a dead-letter
// stream of 10,000 entries.
func BenchmarkList(b *testing.B) {
	_, js := natstest.Start(b).Connect(b)
	ctx := context.Background()
	_, err := dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(b, err)
	for range 10000 {
		_, err := js.PublishAsync("dlq.signup", []byte(`{"n":1}`))
		require.NoError(b, err)
	}
	<-js.PublishAsyncComplete()
	store, err := dlq.OpenStore(ctx, js, "")
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		list, err := store.List(ctx, dlq.Filter{Grep: "n"})
		if err != nil || len(list) != 10000 {
			b.Fatal(len(list), err)
		}
	}
}
