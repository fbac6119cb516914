package main

// The metrics a `run` process exports, read from its registry rather than
// from the sources: what the Grafana dashboard and the alert rules may name.

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// exportedMetric is one metric family a process exports.
type exportedMetric struct {
	typ    dto.MetricType
	labels []string // variable labels, sorted
}

// series are the names a query may use for the family: a histogram's
// _bucket, _sum and _count, a summary's _sum and _count, or its own name.
func (m exportedMetric) series(name string) []string {
	switch m.typ {
	case dto.MetricType_HISTOGRAM:
		return []string{name + "_bucket", name + "_sum", name + "_count"}
	case dto.MetricType_SUMMARY:
		return []string{name, name + "_sum", name + "_count"}
	}
	return []string{name}
}

// recordingRegisterer registers on a registry and keeps what it registered,
// to describe it: a vector with no series yet is missing from Gather.
type recordingRegisterer struct {
	*prometheus.Registry
	registered []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	err := r.Registry.Register(c)
	if err == nil {
		r.registered = append(r.registered, c)
	}
	return err
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var descRe = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)

// exportedMetrics are the series names a `run` process's /metrics serves or
// will serve, with their labels: its registry as startStack builds it (the
// process's and Go's collectors, the build info, the worker's metrics and
// the reload counter), with the worker made on an embedded NATS server.
// Histograms count as their _bucket, _sum and _count series.
func exportedMetrics(t *testing.T) map[string]exportedMetric {
	t.Helper()
	reg := &recordingRegisterer{Registry: newRegistry()}
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	w, err := worker.New(worker.Config{
		Conn: nc, JetStream: js, Workflows: mapping.DefaultConfig().Workflows,
		Kustomer:      kustomer.Config{BaseURL: "http://127.0.0.1:1", APIKey: "unused"},
		RatePerMinute: 60, ReplicaID: "metrics", Logger: zerolog.Nop(), Registerer: reg,
	})
	require.NoError(t, err)
	_ = w
	reloadsMetric(reg)

	out := map[string]exportedMetric{}
	add := func(name string, m exportedMetric) {
		slices.Sort(m.labels)
		for _, s := range m.series(name) {
			out[s] = m
		}
	}
	// What has series now, with its type.
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		var labels []string
		if len(f.Metric) > 0 {
			for _, lp := range f.Metric[0].Label {
				labels = append(labels, lp.GetName())
			}
		}
		add(f.GetName(), exportedMetric{typ: f.GetType(), labels: labels})
	}
	// And every description of what was registered, series or not.
	for _, c := range reg.registered {
		typ := dto.MetricType_UNTYPED
		switch c.(type) {
		case *prometheus.CounterVec, prometheus.Counter:
			typ = dto.MetricType_COUNTER
		case *prometheus.GaugeVec, prometheus.Gauge:
			typ = dto.MetricType_GAUGE
		case *prometheus.HistogramVec, prometheus.Histogram:
			typ = dto.MetricType_HISTOGRAM
		case *prometheus.SummaryVec, prometheus.Summary:
			typ = dto.MetricType_SUMMARY
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRe.FindStringSubmatch(d.String())
			require.NotNil(t, m, "a metric description this test cannot read: %s", d)
			if _, ok := out[m[1]]; ok && typ == dto.MetricType_UNTYPED {
				continue
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			add(m[1], exportedMetric{typ: typ, labels: labels})
		}
	}
	require.Contains(t, out, "kustomer_sync_events_total")
	require.Contains(t, out, "kustomer_sync_config_reloads_total")
	return out
}

// promNameRe finds the metric names of this program in a PromQL expression.
var promNameRe = regexp.MustCompile(`\bkustomer_sync_[a-zA-Z0-9_]+`)

// selectorRe finds a metric name and its label matchers: name{a="x",b=~"y"}.
var selectorRe = regexp.MustCompile(`\b(kustomer_sync_[a-zA-Z0-9_]+)\{([^}]*)\}`)

// groupingRe finds the labels of by (...) and without (...).
var groupingRe = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)

// checkPromQL reports what expr names that the program does not export: a
// metric name, a label matched on a metric that has no such label, or a
// label grouped by that none of expr's metrics has (le, job and instance
// always exist: Prometheus adds the last two, histograms the first).
func checkPromQL(expr string, exported map[string]exportedMetric) []string {
	var problems []string
	have := map[string]bool{"le": true, "job": true, "instance": true}
	for _, name := range promNameRe.FindAllString(expr, -1) {
		m, ok := exported[name]
		if !ok {
			problems = append(problems, "no metric "+name)
			continue
		}
		for _, l := range m.labels {
			have[l] = true
		}
	}
	for _, sel := range selectorRe.FindAllStringSubmatch(expr, -1) {
		m, ok := exported[sel[1]]
		if !ok {
			continue
		}
		for _, matcher := range strings.Split(sel[2], ",") {
			label := strings.TrimSpace(strings.FieldsFunc(matcher, func(r rune) bool { return r == '=' || r == '!' || r == '~' })[0])
			if label != "" && !slices.Contains(m.labels, label) && label != "job" && label != "instance" {
				problems = append(problems, sel[1]+" has no label "+label)
			}
		}
	}
	for _, g := range groupingRe.FindAllStringSubmatch(expr, -1) {
		for _, label := range strings.Split(g[1], ",") {
			if label = strings.TrimSpace(label); label != "" && !have[label] {
				problems = append(problems, "no metric of the query has the label "+label)
			}
		}
	}
	return problems
}

func TestExportedMetricsAreReadFromTheRegistry(t *testing.T) {
	t.Parallel()
	exported := exportedMetrics(t)
	// A vector with no series yet is there, with its labels and type.
	require.Equal(t, exportedMetric{typ: dto.MetricType_COUNTER, labels: []string{"class", "workflow"}}, exported["kustomer_sync_dead_letters_total"])
	require.Contains(t, exported, "kustomer_sync_kustomer_request_duration_seconds_bucket")
	require.NotContains(t, exported, "kustomer_sync_kustomer_request_duration_seconds")
	require.Equal(t, []string{"workflow"}, exported["kustomer_sync_consumer_pending"].labels)
	require.Contains(t, exported, "kustomer_sync_build_info")
	require.Contains(t, exported, "process_resident_memory_bytes")

	require.Empty(t, checkPromQL(`sum by (workflow, class) (increase(kustomer_sync_dead_letters_total{class!="invalid_event"}[5m]))`, exported))
	require.Equal(t, []string{"no metric kustomer_sync_dead_letter_total"}, checkPromQL(`kustomer_sync_dead_letter_total`, exported))
	require.Equal(t, []string{"kustomer_sync_retries_total has no label outcome"}, checkPromQL(`kustomer_sync_retries_total{outcome="x"}`, exported))
	require.Equal(t, []string{"no metric of the query has the label kind"}, checkPromQL(`sum by (kind) (rate(kustomer_sync_items_total[5m]))`, exported))
	require.Equal(t, []string{"no metric kustomer_sync_event_duration_seconds"}, checkPromQL(`kustomer_sync_event_duration_seconds`, exported))
}
