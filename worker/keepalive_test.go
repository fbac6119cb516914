package worker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// progressCounter is a message that counts its InProgress calls.
type progressCounter struct {
	jetstream.Msg
	n atomic.Int32
}

func (m *progressCounter) InProgress() error { m.n.Add(1); return nil }

func TestKeepAliveSendsInProgressEveryIntervalUntilStopped(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	m := &progressCounter{}
	stop := keepAlive(clock, m, 10*time.Second)
	clock.BlockUntil(1)
	clock.Advance(9 * time.Second)
	require.Zero(t, m.n.Load(), "not before the interval")
	for want := int32(1); want <= 3; want++ {
		clock.Advance(time.Second)
		clock.BlockUntil(1) // its next timer: the InProgress was sent
		require.Equal(t, want, m.n.Load())
		clock.Advance(9 * time.Second)
	}
	stop()
	require.Zero(t, clock.Waiters(), "stopped: no timer left")
	clock.Advance(time.Minute)
	require.Equal(t, int32(3), m.n.Load(), "nothing sent once stopped")
	stop() // a second stop is harmless
}
