package worker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// publishLoopEvents publishes events of perEvent leads each, externalIds
// "<prefix>-<event>-<item>", and returns every externalId.
func (h *harness) publishLoopEvents(prefix string, events, perEvent int) []string {
	h.t.Helper()
	var ids []string
	for e := range events {
		var items []string
		for i := range perEvent {
			id := fmt.Sprintf("%s-%d-%d", prefix, e, i)
			ids = append(ids, id)
			items = append(items, fmt.Sprintf(`{"id":%q,"name":"Lead %s"}`, id, id))
		}
		h.publish("leads.batch", fmt.Sprintf("%s-%d", prefix, e), `{"leads":[`+strings.Join(items, ",")+`]}`)
	}
	return ids
}

// requireEachCreatedOnce checks the sandbox's record: every id created
// exactly once, nothing else created.
func (h *harness) requireEachCreatedOnce(ids []string) {
	h.t.Helper()
	counts := h.sb.Sandbox.CountByExternalID()
	for _, id := range ids {
		require.Equal(h.t, 1, counts[id], "externalId %s created %d times", id, counts[id])
	}
	require.Len(h.t, counts, len(ids))
	require.Equal(h.t, 0, h.sb.Sandbox.Stats().Duplicates)
}

func (h *harness) waitCreated(n int, within time.Duration) {
	h.t.Helper()
	require.Eventually(h.t, func() bool { return len(h.sb.Sandbox.CountByExternalID()) >= n }, within, 10*time.Millisecond,
		"only %d of %d created\n%s", len(h.sb.Sandbox.CountByExternalID()), n, lastLines(h.logs.String(), 30))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func TestAThirtySecondOutagePausesTheWorkflowAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  loopConfig,
		sandbox: sandbox.Config{Latency: 5 * time.Millisecond},
		worker:  func(c *Config) { c.PauseNakDelay = time.Second },
	})
	ids := h.publishLoopEvents("outage", 40, 5)
	h.waitCreated(len(ids)*3/10, 20*time.Second)

	h.sb.Sandbox.SetFaults(sandbox.Faults{Outage: true})
	outageStart := time.Now()
	require.Eventually(t, func() bool { return strings.Contains(h.logs.String(), "workflow paused") }, 20*time.Second, 10*time.Millisecond)
	created := len(h.sb.Sandbox.Customers())
	// Hold the outage for 30 s in all; the workflow stays paused meanwhile.
	<-time.After(time.Until(outageStart.Add(30 * time.Second)))
	require.Equal(t, created, len(h.sb.Sandbox.Customers()), "nothing is created during the outage")
	h.sb.Sandbox.SetFaults(sandbox.Faults{})

	h.waitCreated(len(ids), 60*time.Second)
	h.waitIdle("batch")
	require.Contains(t, h.logs.String(), "workflow resumed")
	h.requireEachCreatedOnce(ids)
	require.Empty(t, h.deadLetters())
}

func TestCreatesThatTimeOutAreLookedUpNotCreatedTwice(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  loopConfig,
		sandbox: sandbox.Config{TimeoutRate: 0.2, Seed: 7},
	})
	ids := h.publishLoopEvents("timeout", 20, 5)
	h.waitCreated(len(ids), 60*time.Second)
	h.waitIdle("batch")
	require.Greater(t, h.sb.Sandbox.Stats().Timeouts, 5, "the fault was exercised")
	require.Contains(t, h.logs.String(), "unknown outcome resolved by look-up")
	h.requireEachCreatedOnce(ids)
	require.Empty(t, h.deadLetters())
}

func TestALongLoopIsKeptAliveAndNotRedelivered(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config: `
workflows:
  - name: batch
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    concurrency: 1
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
`,
		sandbox: sandbox.Config{Latency: 100 * time.Millisecond},
		worker:  func(c *Config) { c.AckWait = time.Second },
	})
	ids := h.publishLoopEvents("long", 1, 30) // ≥ 3 s of work, three times the ack wait
	h.waitCreated(len(ids), 30*time.Second)
	h.waitIdle("batch")
	c, err := h.js.Consumer(context.Background(), StreamDefault, ConsumerPrefixDefault+"batch")
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered, "the event was redelivered mid-work")
	h.requireEachCreatedOnce(ids)
}

func TestTenThousandItemEventIsProcessedCompletelyWithoutStallingOthers(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config: `
workflows:
  - name: batch
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    concurrency: 16
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
`,
		sandbox: sandbox.Config{RatePerMinute: -1},
		rate:    600000,
		worker:  func(c *Config) { c.AckWait = 2 * time.Second },
	})
	big := h.publishLoopEvents("big", 1, 10000) // ~0.5 MB: fits NATS's default 1 MB payload
	small := h.publish("leads.other", "small-1", `{"leads":[{"id":"small","name":"Small"}]}`)
	// The small event finishes while the big one is still running.
	run := h.waitRun(small)
	require.Equal(t, RunSucceeded, run.Status)
	require.Less(t, len(h.sb.Sandbox.Customers()), len(big), "the small event waited for the big one")

	h.waitCreated(len(big)+1, 3*time.Minute)
	h.waitIdle("batch")
	h.requireEachCreatedOnce(append(big, "small"))
	recs, err := h.runs.List(context.Background(), RunFilter{})
	require.NoError(t, err)
	require.Len(t, recs, 2, "the big event's run record was written, trimmed to fit one message")
}

func TestAnEventWithMoreItemsThanTheLimitIsRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: `
workflows:
  - name: batch
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    max_items: 50
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
`})
	h.publishLoopEvents("over", 1, 51)
	var reason string
	require.Eventually(t, func() bool {
		dead := h.deadLetters()
		if len(dead) == 1 {
			reason = dead[0].Error
		}
		return len(dead) == 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Contains(t, reason, "51")
	require.Contains(t, reason, "50")
	require.Empty(t, h.sb.Sandbox.Customers())
}
