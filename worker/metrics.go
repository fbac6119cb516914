package worker

import (
	"cmp"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
)

// metricsRegisterer is where every metric of this package is registered:
// the one place to change for another registry.
var metricsRegisterer prometheus.Registerer = prometheus.DefaultRegisterer

// Metrics are registered with metricsRegisterer, Prometheus' default
// registry; `run --metrics-addr` serves them on /metrics.
var (
	metricEvents = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_events_total",
		Help: "Events finished, by workflow and run status.",
	}, []string{"workflow", "status"})
	metricItems = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_items_total",
		Help: "Loop items finished, by workflow and outcome.",
	}, []string{"workflow", "outcome"})
	metricDeadLetters = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_dead_letters_total",
		Help: "Dead-letter records published, by workflow and class.",
	}, []string{"workflow", "class"})
	metricForgedReplays = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_forged_replay_markers_total",
		Help: "Events carrying replay headers that did not verify with the replay key, by workflow; they were processed as new events.",
	}, []string{"workflow"})
	metricPaused = promauto.With(metricsRegisterer).NewGaugeVec(prometheus.GaugeOpts{
		Name: "kustomer_sync_workflow_paused",
		Help: "1 while a workflow is paused on a systemic Kustomer failure.",
	}, []string{"workflow"})
	metricEventSeconds = promauto.With(metricsRegisterer).NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kustomer_sync_event_duration_seconds",
		Help:    "Time from fetching an event to acknowledging it.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
	}, []string{"workflow"})
	metricRetries = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_retries_total",
		Help: "Attempts of items beyond their first (Kustomer failed transiently, throttled or timed out), by workflow.",
	}, []string{"workflow"})
	metricKustomerRequests = promauto.With(metricsRegisterer).NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_kustomer_requests_total",
		Help: "Requests sent to Kustomer, by kind (create, lookup, update, bulk) and HTTP status code (none: no answer, a timeout or a failed connection).",
	}, []string{"kind", "code"})
	metricKustomerSeconds = promauto.With(metricsRegisterer).NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kustomer_sync_kustomer_request_duration_seconds",
		Help:    "Time from sending a request to Kustomer to reading its whole answer, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
	}, []string{"kind"})
	metricKustomerThrottled = promauto.With(metricsRegisterer).NewCounter(prometheus.CounterOpts{
		Name: "kustomer_sync_kustomer_rate_limited_total",
		Help: "Requests Kustomer refused with 429 Too Many Requests.",
	})
)

func init() {
	metricsRegisterer.MustRegister(consumerMetrics)
}

// ObserveKustomerRequest counts a request to Kustomer in the metrics; give it
// to [kustomer.Config.OnRequest].
func ObserveKustomerRequest(r kustomer.RequestInfo) {
	code := "none"
	if r.StatusCode > 0 {
		code = strconv.Itoa(r.StatusCode)
	}
	metricKustomerRequests.WithLabelValues(r.Kind, code).Inc()
	metricKustomerSeconds.WithLabelValues(r.Kind).Observe(r.Duration.Seconds())
	if r.StatusCode == http.StatusTooManyRequests {
		metricKustomerThrottled.Inc()
	}
}

// ExportBudgetMetrics publishes the limiter's rate in force (per second, and
// per minute as before), the time spent waiting for it and the number of
// live replicas. Call it once per process; later calls are ignored.
func ExportBudgetMetrics(lim *loop.Limiter, b *Budget) {
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kustomer_sync_rate_per_minute",
			Help: "Kustomer requests per minute this replica may spend now: its share of the budget, less what pacing leaves to other clients.",
		}, lim.PerMinute),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kustomer_sync_rate_limit_requests_per_second",
			Help: "Kustomer requests per second this replica may spend now: its share of the budget, less what pacing leaves to other clients.",
		}, func() float64 { return lim.PerMinute() / 60 }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kustomer_sync_rate_limit_wait_seconds_total",
			Help: "Time requests spent waiting for the rate budget, summed over requests: a steady rise means the budget, not Kustomer, sets the pace.",
		}, func() float64 { return lim.Waited().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kustomer_sync_replicas",
			Help: "Live replicas sharing the Kustomer budget.",
		}, func() float64 { return float64(b.Replicas()) }),
	} {
		_ = metricsRegisterer.Register(g) // AlreadyRegistered on a second call: keep the first
	}
}

// consumerScrapeTTL is how long consumer and dead-letter figures read at a
// scrape are reused, so frequent scrapes by several Prometheus servers cost
// JetStream one read per consumer at most that often.
const consumerScrapeTTL = 5 * time.Second

// consumerMetrics reports, at scrape time, the consumer state of every
// running worker's workflows and the dead letters each holds.
var consumerMetrics = &consumerCollector{workers: map[*Worker]struct{}{}}

var (
	descPending = prometheus.NewDesc("kustomer_sync_consumer_pending",
		"Events in the stream not yet delivered to the workflow's consumer.", []string{"workflow"}, nil)
	descAckPending = prometheus.NewDesc("kustomer_sync_consumer_ack_pending",
		"Events delivered to the workflow's consumer and not yet acknowledged (in flight, or waiting for redelivery).", []string{"workflow"}, nil)
	descRedelivered = prometheus.NewDesc("kustomer_sync_consumer_redelivered",
		"Events of the workflow's consumer delivered more than once and not yet acknowledged.", []string{"workflow"}, nil)
	descDeadLetters = prometheus.NewDesc("kustomer_sync_dead_letter_messages",
		"Dead letters the dead-letter stream holds for the workflow (its dead-letter subject): what `kustomer-sync dlq list` shows.", []string{"workflow"}, nil)
)

// consumerCollector reads consumer info when scraped, cached for
// consumerScrapeTTL. Safe for concurrent use.
type consumerCollector struct {
	mu      sync.Mutex
	workers map[*Worker]struct{}
	cached  []prometheus.Metric
	at      time.Time
}

func (c *consumerCollector) add(w *Worker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.workers[w], c.at = struct{}{}, time.Time{}
}

func (c *consumerCollector) remove(w *Worker) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.workers, w)
	c.at = time.Time{}
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPending, descAckPending, descRedelivered, descDeadLetters} {
		ch <- d
	}
}

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= consumerScrapeTTL {
		c.cached = c.cached[:0]
		for w := range c.workers {
			c.cached = append(c.cached, w.consumerMetrics()...)
		}
		c.at = time.Now()
	}
	for _, m := range c.cached {
		ch <- m
	}
}

// consumerMetrics reads the state of w's consumers and dead letters; what it
// cannot read (NATS down) it leaves out rather than report a stale zero.
func (w *Worker) consumerMetrics() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []prometheus.Metric
	for _, f := range w.flows {
		info, err := f.cons.Info(ctx)
		if err != nil {
			continue
		}
		out = append(out,
			prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(info.NumPending), f.wf.Name),
			prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(info.NumAckPending), f.wf.Name),
			prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(info.NumRedelivered), f.wf.Name))
	}
	st, err := w.js.Stream(ctx, cmp.Or(w.cfg.DeadLetter.Name, dlq.StreamDefault))
	if err != nil {
		return out
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return out
	}
	for _, f := range w.flows {
		n := info.State.Subjects[f.wf.DeadLetterSubject]
		out = append(out, prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(n), f.wf.Name))
	}
	return out
}
