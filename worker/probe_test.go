package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// switchableHost is a Kustomer base URL whose answers a test can change: a
// web server that answers 404 pages (a wrong base URL), or the sandbox.
type switchableHost struct {
	srv      *httptest.Server
	toKust   atomic.Bool // forward to the sandbox instead of answering 404 pages
	requests atomic.Int64
}

func newSwitchableHost(t *testing.T, sandboxURL string) *switchableHost {
	t.Helper()
	target, err := url.Parse(sandboxURL)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	s := &switchableHost{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.toKust.Load() {
			proxy.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("<!DOCTYPE html><html><body><h1>Not Found</h1></body></html>"))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// clientFor returns a worker's Kustomer client that calls host.
func clientFor(t *testing.T, host *switchableHost) func(Kustomer) Kustomer {
	return func(Kustomer) Kustomer {
		c, err := kustomer.New(kustomer.Config{BaseURL: host.srv.URL, APIKey: testAPIKey, Timeout: 2 * time.Second})
		require.NoError(t, err)
		return c
	}
}

func (h *harness) requireWorkflowState(state string) replica.WorkflowState {
	h.t.Helper()
	var got replica.WorkflowState
	require.Eventually(h.t, func() bool {
		ws := h.worker.Workflows()
		if len(ws) != 1 {
			return false
		}
		got = ws[0]
		return got.State == state
	}, 20*time.Second, 10*time.Millisecond, "workflow never %s: %+v\n%s", state, got, lastLines(h.logs.String(), 20))
	return got
}

func (h *harness) consumerInfo(workflow string) (pending uint64, ackPending int) {
	h.t.Helper()
	c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+workflow)
	require.NoError(h.t, err)
	info, err := c.Info(context.Background())
	require.NoError(h.t, err)
	return info.NumPending, info.NumAckPending
}

func TestAWrongBaseURLPausesAtStartAndDeadLettersNothingUntilItAnswers(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	// Restart the harness's worker against a host that answers 404 pages.
	h.stopWorker()
	host := newSwitchableHost(t, h.sb.URL)
	h.opts.wrap = clientFor(t, host)
	h.start("")

	// The start probe failed: paused before anything was fetched.
	st := h.requireWorkflowState(replica.StatePaused)
	require.Contains(t, st.Reason, "start probe failed")
	require.Contains(t, st.Reason, host.srv.URL+" does not answer as Kustomer's API")
	require.NotZero(t, st.Since)

	seqs := []uint64{
		h.publish("leads.new", "wrong-host-1", `{"id":"w1","name":"Ana Lima"}`),
		h.publish("leads.new", "wrong-host-2", `{"id":"w2","name":"Ben Ode"}`),
	}
	// A later probe fails too: still paused, the events wait in the stream.
	require.Eventually(t, func() bool { return host.requests.Load() >= 2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, replica.StatePaused, h.worker.Workflows()[0].State)
	pending, ackPending := h.consumerInfo("default")
	require.EqualValues(t, 2, pending+uint64(ackPending), "the events are held, not consumed")
	require.Empty(t, h.deadLetters())
	require.Empty(t, h.sb.Sandbox.Customers())

	// The base URL answers as Kustomer again: the workflow resumes by itself.
	host.toKust.Store(true)
	for _, seq := range seqs {
		require.Equal(t, runlog.Succeeded, h.waitRun(seq).Status)
	}
	require.Equal(t, replica.StateRunning, h.requireWorkflowState(replica.StateRunning).State)
	require.Len(t, h.sb.Sandbox.Customers(), 2)
	require.Empty(t, h.deadLetters())
	h.requireNoSecretInLogs()
}

func TestA404OnCreateMidRunPausesTheWorkflowInsteadOfDeadLettering(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{worker: func(c *Config) { c.PauseNakDelay = 100 * time.Millisecond }})
	h.stopWorker()
	host := newSwitchableHost(t, h.sb.URL)
	host.toKust.Store(true)
	h.opts.wrap = clientFor(t, host)
	h.start("")
	h.requireWorkflowState(replica.StateRunning)
	require.Equal(t, runlog.Succeeded, h.waitRun(h.publish("leads.new", "mid-1", `{"id":"m1","name":"Ana Lima"}`)).Status)

	host.toKust.Store(false) // e.g. a proxy in front now routes elsewhere
	seq := h.publish("leads.new", "mid-2", `{"id":"m2","name":"Ben Ode"}`)
	st := h.requireWorkflowState(replica.StatePaused)
	require.Contains(t, st.Reason, "POST /v1/customers answered not found")
	require.Empty(t, h.deadLetters())

	host.toKust.Store(true)
	require.Equal(t, runlog.Succeeded, h.waitRun(seq).Status)
	require.Len(t, h.sb.Sandbox.Customers(), 2)
	require.Empty(t, h.deadLetters())
}
