package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

// rate stands for the limiter and the budget the rate gauges read.
type rate struct{}

func (rate) PerMinute() float64    { return 600 }
func (rate) Waited() time.Duration { return 0 }
func (rate) Replicas() int         { return 1 }

func TestKustomerRequestMetricsCountStatusAndThrottles(t *testing.T) {
	t.Parallel()
	m, err := New(prometheus.NewRegistry(), rate{}, rate{})
	require.NoError(t, err)
	before := testutil.ToFloat64(m.KustomerThrottled)
	lookups := testutil.ToFloat64(m.KustomerRequests.WithLabelValues("lookup", "429"))
	none := testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "none"))
	m.ObserveRequest(kustomer.RequestInfo{Kind: "lookup", StatusCode: 429, Duration: time.Millisecond})
	m.ObserveRequest(kustomer.RequestInfo{Kind: "create", Duration: 2 * time.Second})
	require.Equal(t, before+1, testutil.ToFloat64(m.KustomerThrottled))
	require.Equal(t, lookups+1, testutil.ToFloat64(m.KustomerRequests.WithLabelValues("lookup", "429")))
	require.Equal(t, none+1, testutil.ToFloat64(m.KustomerRequests.WithLabelValues("create", "none")), "no answer counts as code none")
}

func TestTwoWorkersOfOneRegistryShareTheirCounters(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := New(reg, rate{}, rate{})
	require.NoError(t, err)
	b, err := New(reg, rate{}, rate{})
	require.NoError(t, err)
	a.Events.WithLabelValues("wf", "succeeded").Inc()
	b.Events.WithLabelValues("wf", "succeeded").Inc()
	require.Equal(t, 2.0, testutil.ToFloat64(a.Events.WithLabelValues("wf", "succeeded")))
	require.Same(t, a.Consumers, b.Consumers)
}
