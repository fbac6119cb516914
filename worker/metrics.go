package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// metrics are a worker's Prometheus collectors, registered on
// [Config.Registerer]; the admin server serves them on /metrics.
type metrics struct {
	events        *prometheus.CounterVec
	items         *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	forgedReplays *prometheus.CounterVec
	paused        *prometheus.GaugeVec
	eventSeconds  *prometheus.HistogramVec
	retries       *prometheus.CounterVec

	kustomerRequests  *prometheus.CounterVec
	kustomerSeconds   *prometheus.HistogramVec
	kustomerThrottled prometheus.Counter

	bulkRequests   *prometheus.CounterVec
	bulkBatchItems *prometheus.HistogramVec
	bulkEstimate   *prometheus.GaugeVec

	// consumers reads the running workflows' consumers at scrape time.
	consumers *consumerCollector
}

// newMetrics registers the worker's metrics on reg. A collector reg already
// holds (another worker of the process registered it) is shared, so the
// counters add up; the gauges of the rate in force, the wait for it and the
// live replicas keep following the first worker's limiter and budget.
func newMetrics(reg prometheus.Registerer, lim *loop.Limiter, b *replica.Budget) (*metrics, error) {
	var errs []error
	m := &metrics{
		events: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_events_total",
			Help: "Events finished, by workflow and run status.",
		}, []string{"workflow", "status"})),
		items: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_items_total",
			Help: "Loop items finished, by workflow and outcome.",
		}, []string{"workflow", "outcome"})),
		deadLetters: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_dead_letters_total",
			Help: "Dead-letter records published, by workflow and class.",
		}, []string{"workflow", "class"})),
		forgedReplays: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_forged_replay_markers_total",
			Help: "Events carrying replay headers that did not verify with the replay key, by workflow; they were processed as new events.",
		}, []string{"workflow"})),
		paused: register(reg, &errs, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kustomer_sync_workflow_paused",
			Help: "1 while a workflow is paused on a systemic Kustomer failure.",
		}, []string{"workflow"})),
		eventSeconds: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_event_duration_seconds",
			Help:    "Time from fetching an event to acknowledging it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}, []string{"workflow"})),
		retries: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_retries_total",
			Help: "Attempts of items beyond their first (Kustomer failed transiently, throttled or timed out), by workflow.",
		}, []string{"workflow"})),
		kustomerRequests: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_kustomer_requests_total",
			Help: "Requests sent to Kustomer, by kind (create, lookup, update, bulk) and HTTP status code (none: no answer, a timeout or a failed connection).",
		}, []string{"kind", "code"})),
		kustomerSeconds: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_kustomer_request_duration_seconds",
			Help:    "Time from sending a request to Kustomer to reading its whole answer, by kind.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"kind"})),
		kustomerThrottled: register(reg, &errs, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kustomer_sync_kustomer_rate_limited_total",
			Help: "Requests Kustomer refused with 429 Too Many Requests.",
		})),
		bulkRequests: register(reg, &errs, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kustomer_sync_bulk_requests_total",
			Help: "Requests of bulk workflows, by workflow and request (submit, poll, lookup); each costs a rate unit.",
		}, []string{"workflow", "request"})),
		bulkBatchItems: register(reg, &errs, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kustomer_sync_bulk_batch_items",
			Help:    "Customers per bulk request, by workflow.",
			Buckets: []float64{1, 5, 10, 25, 50, 75, 90, 100},
		}, []string{"workflow"})),
		bulkEstimate: register(reg, &errs, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kustomer_sync_bulk_job_estimate_seconds",
			Help: "How long a bulk job is expected to take, learnt from polls; the first poll is sent then.",
		}, []string{"workflow"})),
		consumers: register(reg, &errs, &consumerCollector{workers: map[*Worker]struct{}{}}),
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
		return nil, fmt.Errorf("worker: metrics: %w", err)
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

// observeRequest counts a request to Kustomer; the worker gives it to its
// client as [kustomer.Config.OnRequest].
func (m *metrics) observeRequest(r kustomer.RequestInfo) {
	code := "none"
	if r.StatusCode > 0 {
		code = strconv.Itoa(r.StatusCode)
	}
	m.kustomerRequests.WithLabelValues(r.Kind, code).Inc()
	m.kustomerSeconds.WithLabelValues(r.Kind).Observe(r.Duration.Seconds())
	if r.StatusCode == http.StatusTooManyRequests {
		m.kustomerThrottled.Inc()
	}
}

// consumerScrapeTTL is how long consumer and dead-letter figures read at a
// scrape are reused, so frequent scrapes by several Prometheus servers cost
// JetStream one read per consumer (and one of the dead letters' headers) at
// most that often.
const consumerScrapeTTL = 10 * time.Second

var (
	descPending = prometheus.NewDesc("kustomer_sync_consumer_pending",
		"Events in the stream not yet delivered to the workflow's consumer.", []string{"workflow"}, nil)
	descAckPending = prometheus.NewDesc("kustomer_sync_consumer_ack_pending",
		"Events delivered to the workflow's consumer and not yet acknowledged (in flight, or waiting for redelivery).", []string{"workflow"}, nil)
	descRedelivered = prometheus.NewDesc("kustomer_sync_consumer_redelivered",
		"Events of the workflow's consumer delivered more than once and not yet acknowledged.", []string{"workflow"}, nil)
	descDeadLetters = prometheus.NewDesc("kustomer_sync_dead_letter_messages",
		"Dead letters the dead-letter stream holds for the workflow, by class: what `kustomer-sync dlq stats` shows.", []string{"workflow", "class"}, nil)
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
	// The class of a dead letter is in its headers: counting reads every
	// entry's, as `dlq stats` does. Dead letters are few while all is well.
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := dlq.OpenStore(dctx, w.js, w.cfg.DeadLetter.Name)
	if err != nil {
		return out
	}
	stats, err := store.Stats(dctx, dlq.Filter{})
	if err != nil {
		return out
	}
	for _, f := range w.flows {
		for class, n := range stats[f.wf.Name] {
			out = append(out, prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(n), f.wf.Name, class.String()))
		}
	}
	return out
}
