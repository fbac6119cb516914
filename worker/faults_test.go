package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
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

// The breaker's probes, the runner's retries and the ledger's leases run on
// the worker's clock, which this test drives: the 30 s outage takes
// milliseconds of real time. testing/synctest cannot be used here: the worker
// talks to a real NATS server and the sandbox over sockets, and goroutines
// blocked on network I/O are never "durably blocked", so a bubble's clock
// would not advance. NATS's own timers stay real.
func TestAThirtySecondOutagePausesTheWorkflowAndDeadLettersNothing(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	probes := &probeCounter{clock: clock}
	h := setup(t, harnessOptions{
		config: loopConfig,
		// The limiter paces on real time: with Kustomer's rate headers it
		// would space the probes in real seconds, so the sandbox sends none.
		sandbox: sandbox.Config{Latency: 5 * time.Millisecond, RatePerMinute: -1},
		wrap:    func(k Kustomer) Kustomer { probes.Kustomer = k; return probes },
		worker: func(c *Config) {
			c.PauseNakDelay = 200 * time.Millisecond
			c.Clock = clock
		},
	})
	ids := h.publishLoopEvents("outage", 40, 5)
	h.waitCreated(len(ids)*3/10, 20*time.Second)

	h.sb.Sandbox.SetFaults(sandbox.Faults{Outage: true})
	outageStart := clock.Now()
	// Failed items wait on the clock to be retried: advance it until enough
	// transient failures in a row open the breaker.
	paused := advanceUntil(t, clock, 100*time.Millisecond, func() bool { return h.workflowState("batch").State == replica.StatePaused })
	require.True(t, paused, "the workflow never paused\n%s", lastLines(h.logs.String(), 30))
	require.Contains(t, h.workflowState("batch").Reason, "transient failures in a row")
	created := len(h.sb.Sandbox.Customers())
	before := len(probes.times())

	// Hold the outage for 30 s in all. Once every event in flight is held
	// (its one timer the heartbeat that keeps it alive), the other timer is
	// the next probe's: move the clock to the next timer each time, so the
	// probes keep their backoff, in virtual time.
	for {
		require.Eventually(t, func() bool {
			_, held := h.consumerInfo("batch")
			return held > 0 && clock.Waiters() == 1+held && probes.inFlight.Load() == 0
		}, 5*time.Second, time.Millisecond,
			"the paused workflow should wait for nothing but its next probe and its held events' heartbeats (%d timers)", clock.Waiters())
		if next, _ := clock.NextDeadline(); next.After(outageStart.Add(30 * time.Second)) {
			break
		}
		clock.AdvanceToNext()
	}
	require.Equal(t, replica.StatePaused, h.workflowState("batch").State)
	at := probes.times()[before:]
	require.GreaterOrEqual(t, len(at), 3, "the paused workflow keeps probing")
	for i := 1; i < len(at); i++ {
		require.Equal(t, time.Second<<i, at[i].Sub(at[i-1]), "probe %d: the wait between probes doubles", i+1)
	}
	require.Equal(t, created, len(h.sb.Sandbox.Customers()), "nothing is created during the outage")
	h.sb.Sandbox.SetFaults(sandbox.Faults{})

	resumed := advanceUntil(t, clock, time.Second, func() bool { return h.workflowState("batch").State == replica.StateRunning })
	require.True(t, resumed, "the workflow never resumed\n%s", lastLines(h.logs.String(), 30))
	// The held events run their paused items again; items that still wait
	// for a retry need the clock.
	require.True(t, advanceUntil(t, clock, time.Second, func() bool { return len(h.sb.Sandbox.CountByExternalID()) >= len(ids) }),
		"only %d of %d created\n%s", len(h.sb.Sandbox.CountByExternalID()), len(ids), lastLines(h.logs.String(), 30))
	h.waitIdle("batch")
	h.requireEachCreatedOnce(ids)
	require.Empty(t, h.deadLetters())
}

// probeCounter records when (on clock) the worker probes Kustomer, and
// counts the probes in flight.
type probeCounter struct {
	Kustomer
	clock    loop.Clock
	inFlight atomic.Int64
	mu       sync.Mutex
	at       []time.Time
}

func (p *probeCounter) CustomerByExternalID(ctx context.Context, externalID string) (*kustomer.Customer, error) {
	if externalID == "kustomer-sync-probe" {
		p.mu.Lock()
		p.at = append(p.at, p.clock.Now())
		p.mu.Unlock()
		p.inFlight.Add(1)
		defer p.inFlight.Add(-1)
	}
	return p.Kustomer.CustomerByExternalID(ctx, externalID)
}

func (p *probeCounter) times() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.at)
}

// advanceUntil moves clock a step at a time, giving the worker a moment of
// real time after each step, until cond holds; it reports false if cond
// still fails after 10 s of real time.
func advanceUntil(t *testing.T, clock *looptest.FakeClock, step time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		clock.Advance(step)
		poll := time.NewTimer(10 * time.Millisecond)
		<-poll.C
	}
	return true
}

// workflowState returns the worker's state of the named workflow.
func (h *harness) workflowState(name string) replica.WorkflowState {
	h.t.Helper()
	for _, st := range h.worker.Workflows() {
		if st.Workflow == name {
			return st
		}
	}
	h.t.Fatalf("no workflow %s", name)
	return replica.WorkflowState{}
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
	require.Positive(t, h.sb.Sandbox.Stats().LookupsByExternalID, "timed-out creates were looked up")
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(recs, func(r runlog.Record) bool {
		return slices.ContainsFunc(r.Items, func(it runlog.Item) bool { return it.Outcome == outcome.AlreadyCreated })
	}), "no run record shows a timed-out create found by its look-up")
	h.requireEachCreatedOnce(ids)
	require.Empty(t, h.deadLetters())
}

func TestALongLoopIsKeptAliveAndNotRedelivered(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("loop-concurrency-1"),
		sandbox: sandbox.Config{Latency: 100 * time.Millisecond},
		worker:  func(c *Config) { c.AckWait = time.Second },
	})
	ids := h.publishLoopEvents("long", 1, 30) // ≥ 3 s of work, three times the ack wait
	h.waitCreated(len(ids), 30*time.Second)
	h.waitIdle("batch")
	c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"batch")
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered, "the event was redelivered mid-work")
	h.requireEachCreatedOnce(ids)
}

func TestTenThousandItemEventIsProcessedCompletelyWithoutStallingOthers(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("loop-concurrency-16"),
		sandbox: sandbox.Config{RatePerMinute: -1},
		rate:    600000,
		worker:  func(c *Config) { c.AckWait = 2 * time.Second },
	})
	big := h.publishLoopEvents("big", 1, 10000) // ~0.5 MB: fits NATS's default 1 MB payload
	small := h.publish("leads.other", "small-1", `{"leads":[{"id":"small","name":"Small"}]}`)
	// The small event finishes while the big one is still running.
	run := h.waitRun(small)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.Less(t, len(h.sb.Sandbox.Customers()), len(big), "the small event waited for the big one")

	h.waitCreated(len(big)+1, 3*time.Minute)
	h.waitIdle("batch")
	h.requireEachCreatedOnce(append(big, "small"))
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Len(t, recs, 2, "the big event's run record was written, trimmed to fit one message")
}

func TestAnEventWithMoreItemsThanTheLimitIsRefusedWithTheReason(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("loop-max-items-50")})
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

// kustomerLostAnswerThenNoLookups creates the first customer but loses the
// answer (a timeout), then fails the next two look-ups by externalId with
// a 503: no answer, which is not "not found".
type kustomerLostAnswerThenNoLookups struct {
	Kustomer
	creates, lookups atomic.Int32
}

func (k *kustomerLostAnswerThenNoLookups) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	c, err := k.Kustomer.CreateCustomer(ctx, body)
	if k.creates.Add(1) == 1 && err == nil {
		return nil, &kustomer.Error{Op: "create", Class: kustomer.ClassRetryable, Timeout: true, Message: "answer lost"}
	}
	return c, err
}

func (k *kustomerLostAnswerThenNoLookups) CustomerByExternalID(ctx context.Context, id string) (*kustomer.Customer, error) {
	if k.creates.Load() > 0 && k.lookups.Add(1) <= 2 { // after the start probe
		return nil, unavailable("lookup")
	}
	return k.Kustomer.CustomerByExternalID(ctx, id)
}

// After a create whose answer was lost, a look-up that fails is no answer:
// the item is asked about again, never created a second time.
func TestAFailedLookUpAfterALostAnswerIsAskedAgainNotTakenForNotFound(t *testing.T) {
	t.Parallel()
	k := &kustomerLostAnswerThenNoLookups{}
	h := setup(t, harnessOptions{
		config: leadConfig("retry: {max_attempts: 5, initial_delay: 20ms}"),
		wrap:   func(c Kustomer) Kustomer { k.Kustomer = c; return k },
	})
	rec := h.waitRun(h.publish("leads.web", "lost-answer-1", `{"id":"la-1","name":"Ann"}`))
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, outcome.AlreadyCreated, rec.Items[0].Outcome)
	require.Equal(t, 3, rec.Items[0].Attempts, "the lost answer, a failed look-up, then the look-up that found it")
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["la-1"], "created once")
	require.Zero(t, h.sb.Sandbox.Stats().Duplicates)
}

// kustomerCannotCreateYet refuses the first creates with a 403 (a role
// that may read customers but not create them), while look-ups, and so the
// breaker's probes, succeed.
type kustomerCannotCreateYet struct {
	Kustomer
	refusals atomic.Int32
}

func (k *kustomerCannotCreateYet) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	if k.refusals.Add(-1) >= 0 {
		return nil, &kustomer.Error{Op: "create", Class: kustomer.ClassSystemic, StatusCode: 403, Message: "role lacks customer.create"}
	}
	return k.Kustomer.CreateCustomer(ctx, body)
}

// A workflow that pauses and resumes again and again (its probe passes, its
// creates are refused) holds its event through every pause instead of
// nak'ing it: no delivery is spent, and the event is not dead-lettered as
// max_deliveries however often it pauses.
func TestAnEventIsHeldThroughRepeatedPausesWithoutSpendingDeliveries(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	k := &kustomerCannotCreateYet{}
	k.refusals.Store(5)
	h := setup(t, harnessOptions{
		config:  leadConfig(),
		sandbox: sandbox.Config{RatePerMinute: -1},
		wrap:    func(c Kustomer) Kustomer { k.Kustomer = c; return k },
		worker: func(c *Config) {
			c.Clock = clock
			c.MaxDeliver = 3
		},
	})
	go clock.Drive(t.Context())
	seq := h.publish("leads.web", "held-1", `{"id":"held-1","name":"Ann"}`)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, fmt.Sprintf("%s-%d-1-default", leads.StreamDefault, seq), rec.ID, "the first delivery, held through every pause")
	require.Negative(t, k.refusals.Load(), "the creates were refused five times: five pauses")
	require.Empty(t, h.deadLetters())
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["held-1"])
}

// A worker stopped while its workflow is paused hands its held events back
// at once (nak'ed, for another replica) rather than holding them until the
// drain deadline.
func TestAWorkerStoppedWhilePausedHandsItsHeldEventsBack(t *testing.T) {
	t.Parallel()
	k := &kustomerCannotCreateYet{}
	k.refusals.Store(1 << 30)
	h := setup(t, harnessOptions{
		wrap:   func(c Kustomer) Kustomer { k.Kustomer = c; return k },
		worker: func(c *Config) { c.PauseNakDelay = 50 * time.Millisecond }, // far below the ack wait
	})
	seq := h.publish("leads.web", "held-2", `{"name":"Ann"}`)
	h.requireWorkflowState(replica.StatePaused)
	require.Eventually(t, func() bool { _, held := h.consumerInfo("default"); return held == 1 }, 10*time.Second, 5*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, h.worker.Stop(ctx), "drained before the deadline")
	// Nak'ed, the event goes to the next worker after the nak delay; not
	// handed back, it would wait out the ack wait (30 s, beyond waitRun's 20).
	k.refusals.Store(0)
	h.start("")
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, fmt.Sprintf("%s-%d-2-default", leads.StreamDefault, seq), rec.ID, "its second delivery")
	require.Empty(t, h.deadLetters())
}
