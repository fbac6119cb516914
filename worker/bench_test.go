package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// BenchmarkWorkerEvents measures events per second through the whole path:
// fetch, map, ledger claim, create in the sandbox over HTTP, ledger record,
// result, run record, ack — with the rate limit out of the way.
func BenchmarkWorkerEvents(b *testing.B) {
	h := setup(b, harnessOptions{sandbox: sandbox.Config{RatePerMinute: -1}, rate: 100_000_000})
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		_, err := h.js.PublishAsync("leads.bench", fmt.Appendf(nil, `{"name":"Lead %d","emails":"lead%d@example.com"}`, i, i), jetstream.WithMsgID(fmt.Sprintf("bench-%d", i)))
		require.NoError(b, err)
	}
	<-h.js.PublishAsyncComplete()
	require.Eventually(b, func() bool { return h.sb.Sandbox.Stats().Creates == b.N }, 5*time.Minute, time.Millisecond)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkWorkerLoopItems measures Loop items per second in one event of
// 1,000 items at concurrency 16.
func BenchmarkWorkerLoopItems(b *testing.B) {
	h := setup(b, harnessOptions{
		config:  testWorkflow("loop-concurrency-16"),
		sandbox: sandbox.Config{RatePerMinute: -1},
		rate:    100_000_000,
	})
	b.ResetTimer()
	start := time.Now()
	events := (b.N + 999) / 1000
	h.publishLoopEvents("bench", events, 1000)
	require.Eventually(b, func() bool { return h.sb.Sandbox.Stats().Creates == events*1000 }, 5*time.Minute, time.Millisecond)
	b.StopTimer()
	b.ReportMetric(float64(events*1000)/time.Since(start).Seconds(), "items/s")
}
