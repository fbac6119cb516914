package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestClusterKeepsAnR3StreamThroughANodeStopAndRestart(t *testing.T) {
	t.Parallel()
	cl := natstest.StartCluster(t, 3)
	require.Equal(t, 3, cl.Len())
	_, js := cl.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "r3.a", []byte("before"))
	require.NoError(t, err)

	info, err := st.Info(ctx)
	require.NoError(t, err)
	leader := cl.Index(info.Cluster.Leader)
	require.GreaterOrEqual(t, leader, 0, "the stream leader %q is one of the nodes", info.Cluster.Leader)
	cl.Stop(leader)
	require.Nil(t, cl.Server(leader))

	// Two of three nodes keep a quorum: the stream takes writes again once a
	// new leader is elected.
	require.Eventually(t, func() bool {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		defer pcancel()
		_, err := js.Publish(pctx, "r3.b", []byte("during"))
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "no write accepted with one node down")

	cl.Restart(leader)
	require.NotNil(t, cl.Server(leader))
	require.Eventually(t, func() bool {
		info, err := st.Info(ctx)
		if err != nil || info.State.Msgs != 2 || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return false
			}
		}
		return true
	}, 20*time.Second, 50*time.Millisecond, "the restarted node never caught up")
}

func TestServerRestartedOnItsStoreAndPortKeepsItsStreams(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep"}})
	require.NoError(t, err)
	_, err = js.Publish(ctx, "keep", []byte("x"))
	require.NoError(t, err)

	url := srv.ClientURL()
	again := srv.Restart(t)
	require.Equal(t, url, again.ClientURL(), "same port")
	_, js = again.Connect(t)
	st, err := js.Stream(ctx, "KEEP")
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
}
