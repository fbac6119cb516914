package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

const (
	reloadAlpha = `
  - name: alpha
    subject: "leads.alpha.>"
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
`
	reloadBeta = `
  - name: beta
    subject: "leads.beta.>"
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
`
)

// hangUp writes config to the worker's config file, sends it SIGHUP and
// waits until its metrics count one more reload with that result.
func (r *faultRun) hangUp(p *workerProc, metricsAddr, config, result string) {
	r.t.Helper()
	before := reloads(r.t, metricsAddr, result)
	require.NoError(r.t, os.WriteFile(r.config, []byte(config), 0o600))
	require.NoError(r.t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		return reloads(r.t, metricsAddr, result) == before+1
	}, faultDeadline, faultPoll, "no %s reload counted\n%s", result, r.logs())
}

// reloads reads kustomer_sync_config_reloads_total{result} from a worker's
// metrics; 0 when absent.
func reloads(t *testing.T, addr, result string) int {
	t.Helper()
	n, _ := metricValue(t, addr, `kustomer_sync_config_reloads_total{result="`+result+`"}`)
	return int(n)
}

// metricValue reads one series from a worker's metrics; false when absent.
func metricValue(t *testing.T, addr, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, line)
			return n, true
		}
	}
	return 0, false
}

// freeAddr returns a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// publishLead publishes one lead and waits until its customer exists.
func (r *faultRun) publishLead(js jetstream.JetStream, subject, id string) {
	r.t.Helper()
	_, err := js.Publish(context.Background(), subject, fmt.Appendf(nil, `{"id":%q,"name":"Lead %s"}`, id, id))
	require.NoError(r.t, err)
	r.ids = append(r.ids, id)
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		return r.sb.Sandbox.CountByExternalID()[id] == 1
	}, faultDeadline, faultPoll, "lead %s never created\n%s", id, r.logs())
}

// waitWorkflows waits until the replica publishes exactly these workflows.
func (r *faultRun) waitWorkflows(js jetstream.JetStream, id string, want ...string) {
	r.t.Helper()
	var got []string
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		states, err := replica.Read(context.Background(), js, "")
		require.NoError(r.t, err)
		got = nil
		for _, st := range states {
			if st.Replica != id {
				continue
			}
			for _, w := range st.Workflows {
				if w.State == replica.StateRunning {
					got = append(got, w.Workflow)
				}
			}
		}
		return slices.Equal(got, want)
	}, faultDeadline, faultPoll, "replica %s runs %v, want %v\n%s", id, &got, want, r.logs())
}

func TestSIGHUPReloadsTheConfigAndRefusesABadOne(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	metrics := freeAddr(t)
	r.args = []string{"--metrics-addr", metrics}
	require.NoError(t, os.WriteFile(r.config, []byte("workflows:"+reloadAlpha), 0o600))
	p := r.startWorker("reload-1")
	r.waitWorkflows(js, "reload-1", "alpha")
	r.publishLead(js, "leads.alpha.web", "a1")

	// A bad file is refused: the worker neither dies nor changes.
	r.hangUp(p, metrics, "workflows:"+strings.Replace(reloadAlpha, "subject:", "subjet:", 1), "refused")
	r.waitWorkflows(js, "reload-1", "alpha")
	r.publishLead(js, "leads.alpha.web", "a0")
	// A good one adds a workflow, with its consumer.
	r.hangUp(p, metrics, "workflows:"+reloadAlpha+reloadBeta, "applied")
	r.waitWorkflows(js, "reload-1", "alpha", "beta")
	r.publishLead(js, "leads.beta.web", "b1")
	r.publishLead(js, "leads.alpha.web", "a2")

	// Removing a workflow stops consuming it and keeps its durable consumer.
	_, ok := metricValue(t, metrics, `kustomer_sync_workflow_paused{workflow="alpha"}`)
	require.True(t, ok)
	r.hangUp(p, metrics, "workflows:"+reloadBeta, "applied")
	r.waitWorkflows(js, "reload-1", "beta")
	_, ok = metricValue(t, metrics, `kustomer_sync_workflow_paused{workflow="alpha"}`)
	require.False(t, ok, "a removed workflow has no paused gauge")
	r.publishLead(js, "leads.beta.web", "b2")
	_, err := js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"alpha")
	require.NoError(t, err, "the removed workflow's consumer is kept")

	r.stopWorkers()
	r.requireExactlyOnce(js)
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
		_, err := js.Stream(context.Background(), leads.StreamDefault)
		return err == nil
	}, 20*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
