package worker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
