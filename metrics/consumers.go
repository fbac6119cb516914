package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kustomer-sync/kustomer-sync/dlq"
)

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

// Source is what one worker's running workflows are, as a scrape reads
// them: their durable consumers and the dead-letter stream they write to.
type Source struct {
	JetStream jetstream.JetStream
	// DeadLetterStream names the dead-letter stream; "" is dlq.StreamDefault.
	DeadLetterStream string
	Consumers        []Consumer
}

// Consumer is one workflow's durable consumer.
type Consumer struct {
	Workflow string
	Consumer jetstream.Consumer
}

// Consumers is a collector that reads the consumer info and dead letters
// of the sources added to it when scraped, cached for consumerScrapeTTL.
// Safe for concurrent use.
type Consumers struct {
	mu      sync.Mutex
	sources map[any]Source
	cached  []prometheus.Metric
	at      time.Time
}

func newConsumers() *Consumers { return &Consumers{sources: map[any]Source{}} }

// Add reads s, under owner (a worker), at the next scrapes.
func (c *Consumers) Add(owner any, s Source) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sources[owner], c.at = s, time.Time{}
}

// Remove stops reading owner's source.
func (c *Consumers) Remove(owner any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sources, owner)
	c.at = time.Time{}
}

// Expire makes the next scrape read the sources afresh, past the cache.
func (c *Consumers) Expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = time.Time{}
}

func (c *Consumers) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPending, descAckPending, descRedelivered, descDeadLetters} {
		ch <- d
	}
}

func (c *Consumers) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= consumerScrapeTTL {
		c.cached = c.cached[:0]
		for _, s := range c.sources {
			c.cached = append(c.cached, s.read()...)
		}
		c.at = time.Now()
	}
	for _, m := range c.cached {
		ch <- m
	}
}

// read reads the state of s's consumers and dead letters; what it cannot
// read (NATS down) it leaves out rather than report a stale zero.
func (s Source) read() []prometheus.Metric {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out []prometheus.Metric
	for _, f := range s.Consumers {
		info, err := f.Consumer.Info(ctx)
		if err != nil {
			continue
		}
		out = append(out,
			prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(info.NumPending), f.Workflow),
			prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(info.NumAckPending), f.Workflow),
			prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(info.NumRedelivered), f.Workflow))
	}
	// The class of a dead letter is in its headers: counting reads every
	// entry's, as `dlq stats` does. Dead letters are few while all is well.
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := dlq.OpenStore(dctx, s.JetStream, s.DeadLetterStream)
	if err != nil {
		return out
	}
	stats, err := store.Stats(dctx, dlq.Filter{})
	if err != nil {
		return out
	}
	for _, f := range s.Consumers {
		for class, n := range stats[f.Workflow] {
			out = append(out, prometheus.MustNewConstMetric(descDeadLetters, prometheus.GaugeValue, float64(n), f.Workflow, class.String()))
		}
	}
	return out
}
