// Package metrics is kustomer-sync's Prometheus vocabulary: the collectors a
// worker updates as it handles events and talks to Kustomer ([Set]), and the
// figures of its consumers and dead letters read at scrape time
// ([Consumers]). The admin server serves them on /metrics.
package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

// Set is a worker's Prometheus collectors, registered on the worker's
// Registerer by [New]. Collectors are safe for concurrent use.
type Set struct {
	Events        *prometheus.CounterVec
	Items         *prometheus.CounterVec
	DeadLetters   *prometheus.CounterVec
	ForgedReplays *prometheus.CounterVec
	Paused        *prometheus.GaugeVec
	EventSeconds  *prometheus.HistogramVec
	Retries       *prometheus.CounterVec

	KustomerRequests  *prometheus.CounterVec
	KustomerSeconds   *prometheus.HistogramVec
	KustomerThrottled prometheus.Counter

	BulkRequests   *prometheus.CounterVec
	BulkBatchItems *prometheus.HistogramVec
	BulkEstimate   *prometheus.GaugeVec

	// Consumers reads the running workflows' consumers at scrape time.
	Consumers *Consumers
}

// Limiter is what the rate gauges read of a replica's limiter (a
// *loop.Limiter): the rate in force and the time requests waited for it.
type Limiter interface {
	PerMinute() float64
	Waited() time.Duration
}

// Budget is what the replicas gauge reads of the shared budget (a
// *replica.Budget).
type Budget interface {
	Replicas() int
}

// New registers a worker's metrics on reg. A collector reg already holds
// (another worker of the process registered it) is shared, so the counters
// add up; the gauges of the rate in force, the wait for it and the live
// replicas keep following the first worker's limiter and budget.
func New(reg prometheus.Registerer, lim Limiter, b Budget) (*Set, error) {
	var errs []error
	m := &Set{
		Events: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_events_total",
			Help: "Events finished, by workflow and run status.",
		}, []string{"workflow", "status"})),
		Items: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_items_total",
			Help: "Loop items finished, by workflow and outcome.",
		}, []string{"workflow", "outcome"})),
		DeadLetters: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_dead_letters_total",
			Help: "Dead-letter records published, by workflow and class.",
		}, []string{"workflow", "class"})),
		ForgedReplays: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_forged_replay_markers_total",
			Help: "Events carrying replay headers that did not verify with the replay key, by workflow; they were processed as new events.",
		}, []string{"workflow"})),
		Paused: register(reg, &errs, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kustomer_sync_workflow_paused",
			Help: "1 while a workflow is paused on a systemic Kustomer failure.",
		}, []string{"workflow"})),
		EventSeconds: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_event_duration_seconds",
			Help:    "Time from fetching an event to acknowledging it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"workflow"})),
		Retries: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_retries_total",
			Help: "Attempts of items beyond their first (Kustomer failed transiently, throttled or timed out), by workflow.",
		}, []string{"workflow"})),
		KustomerRequests: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_kustomer_requests_total",
			Help: "Requests sent to Kustomer, by kind (create, lookup, update, bulk) and HTTP status code (none: no answer, a timeout or a failed connection).",
		}, []string{"kind", "code"})),
		KustomerSeconds: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_kustomer_request_duration_seconds",
			Help:    "Time from sending a request to Kustomer to reading its whole answer, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"kind"})),
		KustomerThrottled: register(reg, &errs, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kustomer_sync_kustomer_rate_limited_total",
			Help: "Requests Kustomer refused with 429 Too Many Requests.",
		})),
		BulkRequests: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_bulk_requests_total",
			Help: "Requests of bulk workflows, by workflow and request (submit, poll, lookup); each costs a rate unit.",
		}, []string{"workflow", "request"})),
		BulkBatchItems: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_bulk_batch_items",
			Help:    "Customers per bulk request, by workflow.",
			Buckets: []float64{1, 5, 10, 25, 50, 75, 90, 100},
		}, []string{"workflow"})),
		BulkEstimate: register(reg, &errs, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kustomer_sync_bulk_job_estimate_seconds",
			Help: "How long a bulk job is expected to take, learnt from polls; the first poll is sent then.",
		}, []string{"workflow"})),
		Consumers: register(reg, &errs, newConsumers()),
	}
	register(reg, &errs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kustomer_sync_rate_per_minute",
		Help: "Kustomer requests per minute this replica may spend now: its share of the budget, less what pacing leaves to other clients.",
	}, lim.PerMinute))
	register(reg, &errs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kustomer_sync_rate_limit_requests_per_second",
		Help: "Kustomer requests per second this replica may spend now: its share of the budget, less what pacing leaves to other clients.",
	}, func() float64 { return lim.PerMinute() / 60 }))
	register(reg, &errs, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kustomer_sync_rate_limit_wait_seconds_total",
		Help: "Time requests spent waiting for the rate budget, summed over requests: a steady rise means the budget, not Kustomer, sets the pace.",
	}, func() float64 { return lim.Waited().Seconds() }))
	register(reg, &errs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kustomer_sync_replicas",
		Help: "Live replicas sharing the Kustomer budget.",
	}, func() float64 { return float64(b.Replicas()) }))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return m, nil
}

// register registers c on reg and returns it, or returns the collector of
// the same description that reg already holds. Any other failure is added
// to errs.
func register[C prometheus.Collector](reg prometheus.Registerer, errs *[]error, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		*errs = append(*errs, err)
	}
	return c
}

// ObserveRequest counts a request to Kustomer; the worker gives it to its
// client as [kustomer.Config.OnRequest].
func (m *Set) ObserveRequest(r kustomer.RequestInfo) {
	code := "none"
	if r.StatusCode > 0 {
		code = strconv.Itoa(r.StatusCode)
	}
	m.KustomerRequests.WithLabelValues(r.Kind, code).Inc()
	m.KustomerSeconds.WithLabelValues(r.Kind).Observe(r.Duration.Seconds())
	if r.StatusCode == http.StatusTooManyRequests {
		m.KustomerThrottled.Inc()
	}
}
