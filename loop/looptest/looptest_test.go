package looptest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

func TestFakeClockFiresTimersOnlyWhenAdvancedPastTheirDeadline(t *testing.T) {
	t.Parallel()
	c := looptest.NewFakeClock(time.Time{})
	start := c.Now()
	late, early := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	require.Equal(t, 2, c.Waiters())
	next, ok := c.NextDeadline()
	require.True(t, ok)
	require.Equal(t, start.Add(time.Second), next)

	c.Advance(999 * time.Millisecond)
	select {
	case <-early.C():
		t.Fatal("fired early")
	default:
	}
	require.True(t, c.AdvanceToNext())
	require.Equal(t, start.Add(time.Second), <-early.C())
	require.False(t, early.Stop(), "a fired timer cannot be stopped")
	require.True(t, late.Stop())
	require.Zero(t, c.Waiters())
	require.False(t, c.AdvanceToNext())

	now := c.NewTimer(0)
	require.Equal(t, c.Now(), <-now.C(), "a zero duration fires at once")
}

func TestFakeClockBlockUntilReturnsOnceEnoughTimersWait(t *testing.T) {
	t.Parallel()
	c := looptest.NewFakeClock(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.BlockUntil(2)
	}()
	c.NewTimer(time.Second)
	c.NewTimer(time.Second)
	<-done
	require.Equal(t, 2, c.Waiters())
}
