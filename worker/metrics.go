package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// Metrics are registered with Prometheus' default registry; `run
// --metrics-addr` serves them on /metrics.
var (
	metricEvents = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_events_total",
		Help: "Events finished, by workflow and run status.",
	}, []string{"workflow", "status"})
	metricItems = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_items_total",
		Help: "Loop items finished, by workflow and outcome.",
	}, []string{"workflow", "outcome"})
	metricDeadLetters = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_dead_letters_total",
		Help: "Dead-letter records published, by workflow and class.",
	}, []string{"workflow", "class"})
	metricForgedReplays = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_forged_replay_markers_total",
		Help: "Events carrying replay headers that did not verify with the replay key, by workflow; they were processed as new events.",
	}, []string{"workflow"})
	metricPaused = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kustomer_sync_workflow_paused",
		Help: "1 while a workflow is paused on a systemic Kustomer failure.",
	}, []string{"workflow"})
	metricEventSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kustomer_sync_event_duration_seconds",
		Help:    "Time from fetching an event to acknowledging it.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
	}, []string{"workflow"})
)

// ExportBudgetMetrics publishes the limiter's rate in force and the number of
// live replicas as the gauges kustomer_sync_rate_per_minute and
// kustomer_sync_replicas. Call it once per process; later calls are ignored.
func ExportBudgetMetrics(lim *loop.Limiter, b *Budget) {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kustomer_sync_rate_per_minute",
			Help: "Kustomer requests per minute this replica may spend now: its share of the budget, less what pacing leaves to other clients.",
		}, lim.PerMinute),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kustomer_sync_replicas",
			Help: "Live replicas sharing the Kustomer budget.",
		}, func() float64 { return float64(b.Replicas()) }),
	} {
		_ = prometheus.Register(g) // AlreadyRegistered on a second call: keep the first
	}
}
