package ledger

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every replica sees the bulk requests every replica sends, in the order
// they were sent, and what any replica shares of a workflow's job
// durations, the latest first when it starts following.
func TestEveryReplicaCountsTheWholeDeploymentsBulkRequestsAndSharesDurations(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, _ := twoReplicas(t)
	require.NoError(t, a.SharePace(ctx, "bulk", []byte("45000 36000")))

	var feed BulkFeed
	var mu sync.Mutex
	learnt := map[string]string{}
	done := make(chan error, 1)
	go func() {
		done <- b.FollowBulk(ctx, &feed, func(wf string, v []byte) {
			mu.Lock()
			defer mu.Unlock()
			learnt[wf] = string(v)
		})
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return learnt["bulk"] == "45000 36000"
	}, 10*time.Second, 10*time.Millisecond, "a replica starting finds what the others learnt")
	var sent []time.Time
	for i := range 4 {
		l := a
		if i%2 == 1 {
			l = b
		}
		at, err := l.BatchSending(ctx, NewBatchToken(), 100)
		require.NoError(t, err)
		sent = append(sent, at)
	}
	require.Eventually(t, func() bool { return feed.Between(sent[0].Add(-time.Nanosecond), sent[3].Add(time.Nanosecond)) == 4 },
		10*time.Second, 10*time.Millisecond)
	require.Equal(t, 2, feed.Between(sent[0], sent[3]), "the two sent between the first and the last, whichever replica sent them")
	require.Equal(t, 0, feed.Between(sent[1], sent[2]))

	require.NoError(t, a.SharePace(ctx, "bulk", []byte("90000 72000")))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return learnt["bulk"] == "90000 72000"
	}, 10*time.Second, 10*time.Millisecond, "and keeps up with them")
	cancel()
	require.NoError(t, <-done)
}
