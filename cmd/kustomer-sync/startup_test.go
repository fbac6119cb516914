package main

// Start-up tests (issue 13): real kustomer-sync processes starting together
// on a fresh cluster, before NATS is up, and giving up when it never is.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// requireReplicasRunning waits until every one of ids heartbeats in the
// replicas bucket with the workflow running: its worker has started.
func (r *faultRun) requireReplicasRunning(js jetstream.JetStream, ids ...string) {
	r.t.Helper()
	var live []string
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		states, err := replica.Read(ctx, js, "")
		if err != nil {
			return false
		}
		live = live[:0]
		for _, s := range states {
			if slices.ContainsFunc(s.Workflows, func(w replica.WorkflowState) bool { return w.Workflow == faultWorkflow }) {
				live = append(live, s.Replica)
			}
		}
		return len(live) == len(ids)
	}, faultDeadline, faultPoll, "replicas running %s: %v\n%s", faultWorkflow, &live, r.logs())
	slices.Sort(live)
	require.Equal(r.t, ids, live)
}

func TestStartThreeReplicasAtOnceOnAFreshClusterAllStartAndShareTheWork(t *testing.T) {
	t.Parallel()
	cl := natstest.StartCluster(t, 3)
	_, js := cl.Connect(t)
	r := newFaultRun(t, cl.ClientURLs())
	r.replicas = 3

	ids := []string{"start-1", "start-2", "start-3"}
	addrs := map[string]string{}
	for _, id := range ids {
		addrs[id] = freeAddr(t)
	}
	for _, id := range ids {
		r.startWorker(id, "--metrics-addr", addrs[id])
	}
	r.requireReplicasRunning(js, ids...)
	r.publishLeads(js, 0, 30, 10)
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.requireReplicasRunning(js, ids...)
	for _, id := range ids {
		n, _ := metricValue(t, addrs[id], `kustomer_sync_items_total{outcome="created",workflow="faults"}`)
		require.Positive(t, n, "replica %s took a share of the work\n%s", id, r.logs())
	}
	r.stopWorkers()
}

func TestStartWaitsForANATSServerThatComesUpLate(t *testing.T) {
	t.Parallel()
	port := natstest.FreePorts(t, 1)[0]
	r := newFaultRun(t, fmt.Sprintf("nats://127.0.0.1:%d", port))
	r.args = []string{"--startup-timeout", "60s"}
	r.startWorker("late-nats")

	// The worker is up and dialling before the server exists.
	require.Eventually(t, func() bool {
		r.requireWorkersAlive()
		return strings.Contains(r.procs[0].out.String(), `"level"`)
	}, faultDeadline, faultPoll, "the worker never started\n%s", r.logs())
	srv := natstest.StartWith(t, t.TempDir(), port)
	_, js := srv.Connect(t)
	r.requireReplicasRunning(js, "late-nats")
	r.publishLeads(js, 0, 5, 4)
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}

func TestStartGivesUpAfterTheStartupTimeoutNamingTheServer(t *testing.T) {
	t.Parallel()
	port := natstest.FreePorts(t, 1)[0]
	config := filepath.Join(t.TempDir(), "workflows.yaml")
	require.NoError(t, os.WriteFile(config, []byte(mappingtest.Workflow(faultWorkflow)), 0o600))
	cmd := exec.Command(workerBinary(t), "run", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port),
		"--config", config, "--kustomer-base-url", "http://127.0.0.1:1", "--startup-timeout", "1s", "--log-format", "json")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "KUSTOMER_API_KEY="+faultAPIKey)
	started := time.Now()
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode(), "%s", out)
	require.Less(t, time.Since(started), 30*time.Second, "it gave up about when the timeout said")
	require.Contains(t, string(out), fmt.Sprintf("connect to NATS at nats://127.0.0.1:%d: not reachable within the start-up timeout 1s (--startup-timeout)", port))
}

// TestTheAdminServerAnswersWhileTheWorkflowsAreStarting: a replica waiting
// for JetStream already serves its probes and metrics (not ready, saying
// why), so an orchestrator sees it alive, and whoever sees its workflows
// running can read its metrics.
func TestTheAdminServerAnswersWhileTheWorkflowsAreStarting(t *testing.T) {
	t.Parallel()
	srv := natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) { o.JetStream = false })
	r := newFaultRun(t, srv.ClientURL())
	addr := freeAddr(t)
	r.args = []string{"--startup-timeout", "60s"}
	r.startWorker("admin-early", "--admin-addr", addr)

	probe := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r.requireWorkersAlive()
		code, body := probe("/readyz")
		assert.Equal(c, http.StatusServiceUnavailable, code, "/readyz while JetStream is missing: %s", body)
		assert.Contains(c, body, "the workflows have not started")
	}, faultDeadline, faultPoll, "%s", r.logs())
	code, body := probe("/healthz")
	require.Equal(t, http.StatusOK, code, body)
	// The wait is said in the log, as a structured warning naming the step.
	require.Eventually(t, func() bool {
		for line := range strings.Lines(r.procs[0].out.String()) {
			var rec struct{ Level, Step string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "warn" && rec.Step == "join the rate budget" {
				return true
			}
		}
		return false
	}, faultDeadline, faultPoll, "no warning while waiting for JetStream\n%s", r.logs())
	require.Equal(t, http.StatusOK, code)
	code, body = probe("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "kustomer_sync_build_info")

	require.NoError(t, srv.EnableJetStream(&server.JetStreamConfig{StoreDir: t.TempDir()}))
	_, js := srv.Connect(t)
	r.requireReplicasRunning(js, "admin-early")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, body := probe("/readyz")
		assert.Equal(c, http.StatusOK, code, "/readyz once JetStream is there: %s", body)
	}, faultDeadline, faultPoll, "%s", r.logs())
	r.publishLeads(js, 0, 3, 2)
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}
