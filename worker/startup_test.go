package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestStartGivesUpAfterTheStartupTimeoutNamingWhatItCouldNotCreate(t *testing.T) {
	t.Parallel()
	// A server without JetStream answers as a cluster with no leader yet
	// does: nobody responds to the JetStream API.
	srv := natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) { o.JetStream = false })
	nc, js := srv.Connect(t)
	w, err := New(Config{
		Conn: nc, JetStream: js, Workflows: mapping.DefaultConfig().Workflows,
		Kustomer: kustomer.Config{BaseURL: "http://127.0.0.1:1", APIKey: "k"}, RatePerMinute: 600, StartupTimeout: time.Second,
	})
	require.NoError(t, err)
	started := time.Now()
	err = w.Start(context.Background())
	require.Error(t, err)
	require.ErrorIs(t, err, jetstream.ErrJetStreamNotEnabled)
	require.Contains(t, err.Error(), "worker: NATS JetStream not ready after")
	require.Contains(t, err.Error(), "the start-up timeout is 1s")
	require.Contains(t, err.Error(), "budget bucket KSYNC_REPLICAS", "the first step: joining the budget")
	require.Less(t, time.Since(started), 10*time.Second)
}

func TestRetryStartupRetriesTransientErrorsAndReturnsOthersAtOnce(t *testing.T) {
	t.Parallel()
	calls := 0
	err := RetryStartup(context.Background(), time.Minute, func(context.Context) error {
		calls++
		if calls < 3 {
			return context.DeadlineExceeded // a request that timed out while a cluster formed
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)

	calls = 0
	bad := errors.New("worker: stream LEADS cannot capture leads.>")
	err = RetryStartup(context.Background(), time.Minute, func(context.Context) error { calls++; return bad })
	require.Equal(t, bad, err, "a configuration error is not retried")
	require.Equal(t, 1, calls)
}
