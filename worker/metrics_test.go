package worker

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/metrics"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// scrapeConsumers returns the consumer and dead-letter gauges of workflow as
// a scrape now would read them, past the cache, by name (and class).
func scrapeConsumers(t *testing.T, h *harness, workflow string) map[string]float64 {
	t.Helper()
	consumers := h.worker.metrics.Consumers
	consumers.Expire()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(consumers)
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			name, ours := mf.GetName(), false
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "workflow":
					ours = l.GetValue() == workflow
				case "class":
					name += "{class=" + l.GetValue() + "}"
				}
			}
			if ours {
				out[name] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// waitEventsCounted waits until the events metric counts n events of
// workflow ended with status: an event is counted once acknowledged, just
// after its run record is written.
func waitEventsCounted(t *testing.T, m *metrics.Set, workflow string, status runlog.Status, n float64) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, n, testutil.ToFloat64(m.Events.WithLabelValues(workflow, string(status))), "%s events of %s counted", status, workflow)
	}, 20*time.Second, 5*time.Millisecond)
}

func TestMetricsMoveAsEventsAreProcessedRetriedAndDeadLettered(t *testing.T) {
	t.Parallel()
	const wf = "metrics-moves"
	h := setup(t, harnessOptions{
		config: `
workflows:
  - name: ` + wf + `
    subject: "leads.>"
    retry: {max_attempts: 2, initial_delay: 10ms, max_delay: 20ms, jitter: 0}
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
`,
		sandbox: sandbox.Config{ErrorRate: 1},
		worker:  func(c *Config) { c.BreakerThreshold = 1000 }, // dead-letter, do not pause
	})
	m := h.worker.metrics
	created503 := testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "503"))
	created201 := testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "201"))
	latencies := testutil.CollectAndCount(m.KustomerSeconds)

	// Kustomer fails: the item is tried twice (one retry) and dead-lettered.
	run := h.waitRun(h.publish("leads.a", "m-1", `{"id":"1","name":"Ann"}`))
	require.Equal(t, runlog.Failed, run.Status)
	waitEventsCounted(t, m, wf, runlog.Failed, 1)
	require.Equal(t, 1.0, testutil.ToFloat64(m.Retries.WithLabelValues(wf)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.DeadLetters.WithLabelValues(wf, outcome.Exhausted.String())))
	require.GreaterOrEqual(t, testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "503"))-created503, 2.0, "both attempts answered 503")
	require.GreaterOrEqual(t, testutil.CollectAndCount(m.KustomerSeconds), max(latencies, 1), "the create latency is observed")
	h.waitIdle(wf)
	require.Equal(t, map[string]float64{
		"kustomer_sync_consumer_pending":                      0,
		"kustomer_sync_consumer_ack_pending":                  0,
		"kustomer_sync_consumer_redelivered":                  0,
		"kustomer_sync_dead_letter_messages{class=exhausted}": 1,
	}, scrapeConsumers(t, h, wf))

	// Kustomer recovers: the next event is created at the first attempt.
	h.sb.Sandbox.SetFaults(sandbox.Faults{})
	run = h.waitRun(h.publish("leads.a", "m-2", `{"id":"2","name":"Bob"}`))
	require.Equal(t, runlog.Succeeded, run.Status)
	waitEventsCounted(t, m, wf, runlog.Succeeded, 1)
	require.Equal(t, 1.0, testutil.ToFloat64(m.Retries.WithLabelValues(wf)), "no retry for a first-time success")
	require.GreaterOrEqual(t, testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "201"))-created201, 1.0)

	// Replayed, the dead letter leaves the stream and the gauge follows.
	require.Equal(t, 1, h.replayAll().Replayed)
	require.Eventually(t, func() bool {
		return scrapeConsumers(t, h, wf)["kustomer_sync_dead_letter_messages{class=exhausted}"] == 0
	},
		20*time.Second, 20*time.Millisecond, h.logs.String())
}
