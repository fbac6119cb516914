package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/worker"
	"github.com/kustomer-sync/kustomer-sync/worker/natstest"
)

func TestSIGHUPDrainsTheWorkerAndExitsCleanly(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())

	p := r.startWorker("sighup-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 20, 15)
	r.waitCreated(len(r.ids) / 10)

	p.mu.Lock()
	p.expected = true
	p.mu.Unlock()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the worker did not exit within 15s of SIGHUP\n%s", r.logs())
	}
	require.NoError(t, p.err, "SIGHUP must drain and exit 0, not kill\n%s", r.logs())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A drain finishes the events in flight: none is left unacknowledged.
	c, err := js.Consumer(ctx, worker.StreamDefault, worker.ConsumerPrefixDefault+faultWorkflow)
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.NumAckPending, "events in flight were abandoned\n%s", r.logs())
	// And the replica left the budget instead of ageing out.
	kv, err := js.KeyValue(ctx, worker.BudgetBucketDefault)
	require.NoError(t, err)
	_, err = kv.Get(ctx, "sighup-1")
	require.True(t, errors.Is(err, jetstream.ErrKeyNotFound), "the replica's budget key is still there: %v", err)

	// What was not processed is processed by the next process, once.
	r.startWorker("sighup-2")
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}

func TestRunStoppedWhileStartingExitsCleanly(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--sandbox", "--nats-url", srv.ClientURL(), "--log-level", "error"}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	// Stop as soon as the worker has begun to set up its streams.
	require.Eventually(t, func() bool {
		_, err := js.Stream(context.Background(), worker.StreamDefault)
		return err == nil
	}, 20*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
