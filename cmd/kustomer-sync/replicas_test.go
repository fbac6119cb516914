package main

// Issue 21: several replicas of one deployment, on one host or running
// different configs, never take work, subjects or ports from each other.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/worker"
	"github.com/kustomer-sync/kustomer-sync/worker/natstest"
)

// cliStatus runs `status --json` against natsURL in this process.
func cliStatus(t *testing.T, natsURL string) worker.Status {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"status", "--json", "--nats-url", natsURL}, strings.NewReader(""), &out, &errOut), errOut.String())
	var st worker.Status
	require.NoError(t, json.Unmarshal(out.Bytes(), &st), out.String())
	return st
}

func TestASecondReplicaOnOneHostRunsWithoutAnAdminServerWhenTheDefaultAddressIsTaken(t *testing.T) {
	t.Parallel()
	// Whoever holds the default address (another replica, or this test),
	// it is taken while the replica starts.
	if ln, err := net.Listen("tcp", admin.AddrDefault); err == nil {
		t.Cleanup(func() { _ = ln.Close() })
	} else {
		require.True(t, errors.Is(err, syscall.EADDRINUSE), "listen on %s: %v", admin.AddrDefault, err)
	}
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	r.env = []string{"KSYNC_ADMIN_ADDR="} // unset: the default address
	r.startWorker("second-on-host")
	r.waitWorkflows(js, "second-on-host", faultWorkflow)
	r.publishLeads(js, 0, 1, 2)
	r.waitDone(js)

	st := cliStatus(t, srv.ClientURL())
	require.Len(t, st.Replicas, 1)
	require.Empty(t, st.Replicas[0].Admin, "status says the replica has no admin server")
	var text bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"status", "--nats-url", srv.ClientURL()}, strings.NewReader(""), &text, &text))
	require.Contains(t, text.String(), "Replica second-on-host has no admin server")

	// An address given explicitly still fails loudly.
	explicit := r.startWorker("explicit-addr", "--admin-addr", admin.AddrDefault)
	select {
	case <-explicit.exited:
		explicit.mu.Lock()
		explicit.expected = true
		explicit.mu.Unlock()
		require.Error(t, explicit.err, "a taken --admin-addr given explicitly is fatal")
	case <-time.After(faultDeadline):
		t.Fatalf("a replica given a taken --admin-addr kept running\n%s", r.logs())
	}
	require.Contains(t, explicit.out.String(), "--admin-addr")
	r.stopWorkers()
}
