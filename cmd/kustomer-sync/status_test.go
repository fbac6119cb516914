package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// inProcessRun is `kustomer-sync run` running in the test process.
type inProcessRun struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	stderr *lockedBuffer
}

// startRun starts `kustomer-sync run args...` in-process; stop ends it as
// SIGTERM would.
func startRun(t *testing.T, args ...string) *inProcessRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &inProcessRun{t: t, cancel: cancel, done: make(chan error, 1), stderr: &lockedBuffer{}}
	go func() {
		r.done <- run(ctx, append([]string{"run", "--log-format", "json"}, args...), strings.NewReader(""), io.Discard, r.stderr)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *inProcessRun) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		require.NoError(r.t, err, r.stderr.String())
	case <-time.After(20 * time.Second):
		r.t.Fatalf("run did not stop within 20s\n%s", r.stderr.String())
	}
}

// status runs `kustomer-sync status --json` and decodes it.
func status(t *testing.T, natsURL string) statusReport {
	t.Helper()
	rep, err := tryStatus(t, natsURL)
	require.NoError(t, err)
	return rep
}

func tryStatus(t *testing.T, natsURL string) (statusReport, error) {
	t.Helper()
	var rep statusReport
	out, _, err := cli(t, "", "status", "--json", "--nats-url", natsURL)
	if err == nil {
		err = json.Unmarshal([]byte(out), &rep)
	}
	return rep, err
}

// waitWorkflow polls `status --json` until the workflow satisfies ok.
func waitWorkflow(t *testing.T, natsURL, name string, ok func(workflowStatus) bool, logs *lockedBuffer) workflowStatus {
	t.Helper()
	var got workflowStatus
	var lastErr error
	require.Eventually(t, func() bool {
		var rep statusReport
		if rep, lastErr = tryStatus(t, natsURL); lastErr != nil {
			return false
		}
		for _, ws := range rep.Workflows {
			if ws.Workflow == name {
				got = ws
				return ok(ws)
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond, "workflow %s never reached the expected state; last: %+v (status: %v)\n%s", name, &got, &lastErr, logs)
	return got
}

func TestAWrongBaseURLPausesRunAndStatusSaysWhyUntilTheURLIsFixed(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	var wrongHits atomic.Int64
	wrong := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wrongHits.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>")
	}))
	t.Cleanup(wrong.Close)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1})
	keyFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(keyFile, []byte("sk-status-test-key"), 0o600))
	common := []string{"--nats-url", srv.ClientURL(), "--kustomer-api-key-file", keyFile, "--rate-per-minute", "6000"}

	first := startRun(t, append(common, "--kustomer-base-url", wrong.URL, "--replica-id", "status-wrong")...)
	paused := waitWorkflow(t, srv.ClientURL(), "default", func(ws workflowStatus) bool { return ws.State == "paused" }, first.stderr)
	require.Contains(t, paused.Reason, "start probe failed")
	require.Contains(t, paused.Reason, wrong.URL+" does not answer as Kustomer's API (check the base URL): GET /v1/customers/externalId=… answered not found")
	require.NotNil(t, paused.Since)
	require.Equal(t, 1, paused.Replicas)
	require.Equal(t, 1, paused.PausedReplicas)
	require.InDelta(t, 6000, paused.RatePerMinute, 1)
	require.Equal(t, leads.ConsumerPrefixDefault+"default", paused.Consumer)
	require.Contains(t, first.stderr.String(), `"kustomer_base_url":"`+wrong.URL+`"`, "run logs the base URL it uses")

	ctx := context.Background()
	for i := range 3 {
		_, err := js.Publish(ctx, "leads.web", fmt.Appendf(nil, `{"name":"Lead %d"}`, i))
		require.NoError(t, err)
	}
	_, err := js.Publish(ctx, "leads.web", []byte(`not json`))
	require.NoError(t, err)
	// Probes go on failing; the events wait in the stream.
	hits := wrongHits.Load()
	require.Eventually(t, func() bool { return wrongHits.Load() > hits }, 10*time.Second, 20*time.Millisecond)
	rep := status(t, srv.ClientURL())
	require.Len(t, rep.Workflows, 1)
	ws := rep.Workflows[0]
	require.Equal(t, "paused", ws.State)
	require.EqualValues(t, 4, ws.Pending, "nothing is consumed while paused")
	require.Zero(t, ws.AckPending)
	require.Empty(t, ws.DeadLetters)
	require.Zero(t, rep.DeadLetters)
	require.Len(t, rep.Replicas, 1)
	require.Equal(t, "status-wrong", rep.Replicas[0].Replica)

	out, _, err := cli(t, "", "status", "--nats-url", srv.ClientURL())
	require.NoError(t, err)
	require.Regexp(t, `(?m)^default\s+paused\s+`, out)
	require.Contains(t, out, "default is paused: start probe failed: kustomer: lookup: 404 ")

	first.stop()
	stopped := status(t, srv.ClientURL()).Workflows[0]
	require.Equal(t, "stopped", stopped.State, "a replica that stops leaves the bucket at once")
	require.Zero(t, stopped.Replicas)

	// Pointed at Kustomer, the same stream is processed; only the poison
	// event is dead-lettered.
	second := startRun(t, append(common, "--kustomer-base-url", sb.URL, "--replica-id", "status-right")...)
	running := waitWorkflow(t, srv.ClientURL(), "default", func(ws workflowStatus) bool {
		return ws.State == "running" && ws.Pending == 0 && ws.AckPending == 0 && ws.DeadLetters[outcome.InvalidEvent] == 1
	}, second.stderr)
	require.Empty(t, running.Reason)
	require.Equal(t, map[outcome.Outcome]int{outcome.InvalidEvent: 1}, running.DeadLetters)
	require.Len(t, sb.Sandbox.Customers(), 3)
	second.stop()
}
