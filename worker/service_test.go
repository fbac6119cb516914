package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func TestNewRefusesAConfigItCannotRunWithNamingTheField(t *testing.T) {
	t.Parallel()
	nc, _ := natstest.Start(t).Connect(t)
	valid := func() Config {
		return Config{Conn: nc, Workflows: mapping.DefaultConfig().Workflows, Kustomer: kustomer.Config{BaseURL: "http://127.0.0.1:1", APIKey: "k"}}
	}
	_, err := New(valid())
	require.NoError(t, err)
	for _, c := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Conn = nil }, "worker: config: Conn (a NATS connection) is required"},
		{func(c *Config) { c.Workflows = nil }, "worker: no workflows"},
		{func(c *Config) { c.Workflows = append(c.Workflows, c.Workflows[0]) }, `worker: workflow "default" defined twice`},
		{func(c *Config) { c.Kustomer.Timeout, c.Ledger.Lease = 10*time.Second, 5*time.Second }, "worker: config: Ledger.Lease 5s must exceed Kustomer.Timeout 10s"},
		{func(c *Config) { c.Ledger.Lease = time.Second }, "worker: config: Ledger.Lease 1s must exceed Kustomer.Timeout 10s"},
		{func(c *Config) { c.RatePerMinute = -1 }, "worker: config: RatePerMinute -1: want 1 or more"},
		{func(c *Config) { c.RateBurst = -1 }, "worker: config: RateBurst -1"},
		{func(c *Config) { c.ReplicaID = "host 1" }, `worker: config: ReplicaID "host 1"`},
		{func(c *Config) { c.Budget.PerMinute = 100 }, "worker: config: Budget.PerMinute, Budget.ReplicaID and Budget.Clock come from"},
		{func(c *Config) { c.Kustomer.APIKey = "" }, "kustomer: config: APIKey is empty"},
	} {
		cfg := valid()
		c.change(&cfg)
		_, err := New(cfg)
		require.ErrorContains(t, err, c.want)
	}
}

func TestReloadAppliesNewWorkflowsAndRefusesOnesTheStreamDoesNotCapture(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: signupConfig})
	ctx := context.Background()
	_, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}})
	require.NoError(t, err)
	parse := func(yaml string) []*mapping.Workflow {
		cfg, err := mapping.Parse("reload.yaml", []byte(yaml))
		require.NoError(t, err)
		return cfg.Workflows
	}

	// A subject another stream captures: refused, signup goes on.
	err = h.worker.Reload(ctx, parse("workflows:\n  - name: orders\n    subject: \"orders.new\"\n    inputs: {name: \"{{trigger.name}}\"}\n"))
	require.ErrorIs(t, err, ErrReloadRefused)
	require.Equal(t, 1, strings.Count(err.Error(), "worker: "), "the package's prefix once: %s", err)
	require.Empty(t, h.logLines("draining in-flight events for the reload"), "a refused reload drains nothing, and says so")
	require.Equal(t, "signup", h.worker.Workflows()[0].Workflow)
	h.waitRun(h.publish("leads.web", "before", `{"name":"Ann"}`))

	// A good config replaces the workflows; the budget is kept throughout.
	require.NoError(t, h.worker.Reload(ctx, parse("workflows:\n  - name: web\n    subject: \"leads.web\"\n    inputs: {name: \"{{trigger.name}}\"}\n")))
	drains := h.logLines("draining in-flight events for the reload")
	require.Len(t, drains, 1, "an accepted reload drains")
	require.Equal(t, DrainTimeoutDefault.String(), drains[0]["deadline"], "a duration with its unit")
	ws := h.worker.Workflows()
	require.Len(t, ws, 1)
	require.Equal(t, "web", ws[0].Workflow)
	run := h.waitRun(h.publish("leads.web", "after", `{"name":"Bob"}`))
	require.Equal(t, "web", run.Workflow)
	require.Equal(t, 1, h.worker.budget.Replicas())
	select {
	case <-h.worker.Stopped():
		t.Fatal("a reload does not stop the worker")
	default:
	}
	for _, m := range h.logMessages() {
		require.NotRegexp(t, `^[a-z]+: `, m, "a log message a user reads starts with no package prefix")
	}
}

func TestStopAndCancelEndsEventsInFlightAtOnceAndClosesStopped(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig, sandbox: sandbox.Config{Latency: 300 * time.Millisecond}})
	h.publishLoopEvents("hard", 2, 20)
	h.waitCreated(1, 10*time.Second)

	start := time.Now()
	require.NoError(t, h.worker.StopAndCancel(context.Background()))
	require.Less(t, time.Since(start), 2*time.Second, "in-flight requests are cancelled, not drained")
	select {
	case <-h.worker.Stopped():
	default:
		t.Fatal("Stopped is closed once StopAndCancel returned")
	}
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Empty(t, recs, "an interrupted event is not recorded half-way")
	require.Error(t, h.worker.Start(context.Background()), "a worker runs once")
}
