package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// runawayConfig maps a slow item with a nested reduce over a long list of the event: a template that
// would run for minutes without a budget.
var runawayConfig = testWorkflow("runaway")

func runawayEvent(t *testing.T, slow, fast int) string {
	t.Helper()
	big := make([]int, 2000)
	leads := make([]map[string]any, 0, slow+fast)
	for i := range fast {
		leads = append(leads, map[string]any{"id": fmt.Sprintf("fast-%d", i), "name": "Fast"})
	}
	for i := range slow {
		leads = append(leads, map[string]any{"id": fmt.Sprintf("slow-%d", i), "slow": true})
	}
	data, err := json.Marshal(map[string]any{"leads": leads, "big": big})
	require.NoError(t, err)
	return string(data)
}

func TestATemplateThatExceedsItsBudgetDeadLettersTheItemAsMapping(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: runawayConfig})
	seq := h.publish("leads.web", "runaway-1", runawayEvent(t, 1, 1))
	run := h.waitRun(seq)
	require.Equal(t, runlog.Partial, run.Status)

	recs := h.deadLetters()
	require.Len(t, recs, 1)
	require.Equal(t, outcome.Mapping, recs[0].Class)
	require.Equal(t, []int{1}, recs[0].Items)
	// Which budget stops it depends on the build's speed (its steps, or its
	// second under -race on a busy machine); package mapping pins down each.
	require.Regexp(t, `mapping: name: stopped: it (needs more than 250000 steps|ran for more than 1s), the budget of one item`, recs[0].Error)
	require.Len(t, h.sb.Sandbox.Customers(), 1, "the other item is created")
}

// TestMappingALongLoopKeepsTheEventFromRedelivery: mapping many slow items takes longer than AckWait;
// the worker heartbeats while it maps, so JetStream does not hand the event to another consumer.
func TestMappingALongLoopKeepsTheEventFromRedelivery(t *testing.T) {
	t.Parallel()
	// JetStream's ack wait is real time, so the Loop must map for longer than
	// that in real time: an item spends its step budget in tens of
	// milliseconds, or its time budget (a second) under -race, so the number
	// of items is fitted to this build: about three times the ack wait of
	// mapping, so a machine that speeds up between the fitting and the run
	// still maps for longer than the ack wait. The ack wait stays above one
	// item's time, as a user's must.
	const ackWait = 2 * time.Second
	slow := slowItemsFor(t, 3*ackWait)
	h := setup(t, harnessOptions{config: runawayConfig, worker: func(c *Config) { c.AckWait = ackWait }})
	seq := h.publish("leads.web", "runaway-long", runawayEvent(t, slow, 0))
	start := time.Now()
	run := h.waitRun(seq)
	require.Equal(t, runlog.Failed, run.Status)
	require.Len(t, run.Items, slow)
	require.Greater(t, time.Since(start), ackWait, "mapping outlasted AckWait, or the test proves nothing")

	h.waitIdle("batch")
	runs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Len(t, runs, 1, "the event was delivered once: no second run of it")
	require.Equal(t, fmt.Sprintf("%s-%d-1-batch", leads.StreamDefault, seq), runs[0].ID)
	recs := h.deadLetters()
	require.Len(t, recs, 1)
	require.Len(t, recs[0].Items, slow)
	require.Equal(t, outcome.Mapping, recs[0].Class)
}

// slowItemsFor returns how many slow items of runawayConfig take about d to
// map on this build, timing one.
func slowItemsFor(t *testing.T, d time.Duration) int {
	t.Helper()
	cfg, err := mapping.Parse("runaway.yaml", []byte(runawayConfig))
	require.NoError(t, err)
	var trigger map[string]any
	require.NoError(t, json.Unmarshal([]byte(runawayEvent(t, 1, 0)), &trigger))
	start := time.Now()
	_, err = cfg.Workflows[0].Map(trigger, trigger["leads"].([]any)[0], 0)
	require.Error(t, err, "a slow item spends its budget")
	return max(4, min(1000, int(d/max(time.Since(start), time.Millisecond))+1))
}

// TestStopDuringMappingEndsAtTheDrainDeadline: a shutdown while a long Loop is being mapped stops
// between items, so the worker does not outlive its drain deadline by more than one item's budget, and
// the event is left for redelivery.
func TestStopDuringMappingEndsAtTheDrainDeadline(t *testing.T) {
	t.Parallel()
	// The event's span says its handling began: a delivered event may still
	// sit in the fetch's buffer, and a stop then leaves it there at once.
	started := tracetest.NewSpanRecorder()
	h := setup(t, harnessOptions{config: runawayConfig, worker: func(c *Config) {
		c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(started))
	}})
	h.publish("leads.web", "runaway-stop", runawayEvent(t, 300, 0)) // minutes of mapping, were it not stopped
	require.Eventually(t, func() bool { return len(started.Started()) > 0 }, 20*time.Second, 20*time.Millisecond, "the event is never handled")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, h.worker.Stop(ctx), context.DeadlineExceeded)
	require.Less(t, time.Since(start), 100*time.Millisecond+5*time.Second, "Stop waited for the mapping of the whole Loop")
	runs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Empty(t, runs, "an interrupted event is not recorded half-way")
}
