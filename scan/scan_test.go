package scan_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/scan"
)

// setup is a stream S on s.> holding s.a.1, s.b.2, s.a.3, ... s.b.10.
func setup(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	require.NoError(t, err)
	for i := 1; i <= 10; i++ {
		sub := "s.a." + strconv.Itoa(i)
		if i%2 == 0 {
			sub = "s.b." + strconv.Itoa(i)
		}
		_, err := js.Publish(ctx, sub, []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	return js, s
}

func read(t *testing.T, s jetstream.Stream, opts scan.Options) []uint64 {
	t.Helper()
	var seqs []uint64
	require.NoError(t, scan.Stream(context.Background(), s, opts, func(m *jetstream.RawStreamMsg) error {
		require.Equal(t, strconv.FormatUint(m.Sequence, 10), string(m.Data))
		seqs = append(seqs, m.Sequence)
		return nil
	}))
	return seqs
}

func TestAScanReadsWhatTheOptionsSelectInOrderAndLeavesNoConsumer(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, read(t, s, scan.Options{}))
	require.Equal(t, []uint64{2, 4, 6, 8, 10}, read(t, s, scan.Options{Filter: "s.b.*"}))
	require.Equal(t, []uint64{7, 9}, read(t, s, scan.Options{Filter: "s.a.*", StartSeq: 6}))
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, read(t, s, scan.Options{Since: time.Now().Add(-time.Hour)}))
	require.Empty(t, read(t, s, scan.Options{Since: time.Now().Add(time.Hour)}))
	require.Empty(t, read(t, s, scan.Options{Filter: "s.none"}), "nothing pending: it returns at once")

	info, err := s.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.State.Consumers, "every scan deleted its consumer")
}

func TestAScanStopsAtFnsErrorAndReturnsItAsItIs(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	stop := errors.New("enough")
	n := 0
	err := scan.Stream(context.Background(), s, scan.Options{}, func(*jetstream.RawStreamMsg) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	require.Equal(t, stop, err)
	require.Equal(t, 3, n)
}

func TestAScanEndsWithItsContext(t *testing.T) {
	t.Parallel()
	_, s := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	err := scan.Stream(ctx, s, scan.Options{}, func(*jetstream.RawStreamMsg) error {
		cancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "scan: stream S")
}
