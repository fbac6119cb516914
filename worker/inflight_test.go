package worker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
)

// concurrencyMeter records the most creates in flight at once.
type concurrencyMeter struct {
	Kustomer
	now, peak atomic.Int64
}

func (m *concurrencyMeter) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	n := m.now.Add(1)
	defer m.now.Add(-1)
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return m.Kustomer.CreateCustomer(ctx, body)
}

func TestEventsInFlightNeverExceedTheWorkflowsLimit(t *testing.T) {
	t.Parallel()
	meter := &concurrencyMeter{}
	h := setup(t, harnessOptions{
		config:  testWorkflow("max-in-flight-3"),
		sandbox: sandbox.Config{Latency: 20 * time.Millisecond},
		wrap:    func(k Kustomer) Kustomer { meter.Kustomer = k; return meter },
	})
	for i := range 30 {
		h.publish("leads.x", fmt.Sprintf("f-%d", i), fmt.Sprintf(`{"name":"Lead %d"}`, i))
	}
	// While they run, the consumer never has more than that out unacknowledged:
	// a full pool stops fetching instead of buffering.
	c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"default")
	require.NoError(t, err)
	maxPending := 0
	require.Eventually(t, func() bool {
		if info, err := c.Info(context.Background()); err == nil {
			maxPending = max(maxPending, info.NumAckPending)
		}
		return h.sb.Sandbox.Stats().Creates == 30
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(3), meter.peak.Load(), "three events at a time, each one item at a time")
	require.LessOrEqual(t, maxPending, 3)
	require.Positive(t, maxPending, "the sampling saw the work in flight")
}
