package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func (h *harness) deadLetters() []dlq.Record {
	h.t.Helper()
	store, err := dlq.OpenStore(context.Background(), h.js, dlq.StreamDefault)
	require.NoError(h.t, err)
	recs, err := store.List(context.Background(), dlq.Filter{All: true})
	require.NoError(h.t, err)
	return recs
}

func (h *harness) replayAll() dlq.ReplayResult {
	h.t.Helper()
	store, err := dlq.OpenStore(context.Background(), h.js, dlq.StreamDefault)
	require.NoError(h.t, err)
	res, err := store.Replay(context.Background(), dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.NoError(h.t, err)
	return res
}

// waitRuns polls until n runs of the workflow are in the run log.
func (h *harness) waitRuns(n int) []runlog.Record {
	h.t.Helper()
	var recs []runlog.Record
	require.Eventually(h.t, func() bool {
		var err error
		recs, err = h.runs.List(context.Background(), runlog.Filter{})
		return err == nil && len(recs) >= n
	}, 20*time.Second, 20*time.Millisecond, "fewer than %d runs\nlogs:\n%s", n, h.logs.String())
	return recs
}

var loopConfig = testWorkflow("loop")

// The fix a user makes after reading the dead letter: "(at)" spelled out.
var fixedLoopConfig = testWorkflow("loop-fixed")

func TestReplayOfAPartialLoopCreatesOnlyTheFailedItemsWithTheFixedMapping(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig})
	payload := `{"leads":[{"id":"a","name":"Ann","email":"ann@x.com"},{"id":"b","name":"Bob","email":"bob(at)x.com"},{"id":"c","name":"Cy"}]}`
	seq := h.publish("leads.batch", "batch-1", payload)

	run := h.waitRun(seq)
	require.Equal(t, runlog.Partial, run.Status)
	require.Len(t, h.sb.Sandbox.Customers(), 2)
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	require.Equal(t, outcome.Validation, dead[0].Class)
	require.Equal(t, []int{1}, dead[0].Items)
	require.Equal(t, payload, string(dead[0].Payload), "the payload is kept byte for byte")
	require.Contains(t, dead[0].Error, `emails[0].email: "bob(at)x.com" is not an email address`)

	h.stopWorker()
	h.start(fixedLoopConfig)
	res := h.replayAll()
	require.Equal(t, 1, res.Replayed)

	require.Eventually(t, func() bool { return len(h.sb.Sandbox.Customers()) == 3 }, 20*time.Second, 10*time.Millisecond, h.logs.String())
	h.waitIdle("batch")
	require.Len(t, h.sb.Sandbox.Customers(), 3)
	for ext, n := range h.sb.Sandbox.CountByExternalID() {
		require.Equal(t, 1, n, "externalId %s created %d times", ext, n)
	}
	require.Empty(t, h.deadLetters())
	require.Empty(t, h.replayAll().Entries, "a second replay finds nothing to publish")
}

func TestReplayAfterTheFaultIsFixedCreatesTheCustomersAndEmptiesTheStream(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("retry-twice"),
		sandbox: sandbox.Config{ErrorRate: 1},
		worker:  func(c *Config) { c.BreakerThreshold = 1000 }, // dead-letter, do not pause
	})
	s1 := h.publish("leads.a", "e-1", `{"id":"1","name":"Ann"}`)
	s2 := h.publish("leads.a", "e-2", `{"id":"2","name":"Bob"}`)
	for _, seq := range []uint64{s1, s2} {
		run := h.waitRun(seq)
		require.Equal(t, runlog.Failed, run.Status)
		require.Equal(t, 2, run.Items[0].Attempts)
		require.Equal(t, outcome.Exhausted, run.Items[0].Outcome)
	}
	dead := h.deadLetters()
	require.Len(t, dead, 2)
	for _, d := range dead {
		require.Equal(t, outcome.Exhausted, d.Class)
		require.Equal(t, 503, d.StatusCode)
		require.Equal(t, 2, d.Attempts)
		require.False(t, d.FirstFailure.IsZero())
		require.False(t, d.LastFailure.Before(d.FirstFailure))
	}

	h.sb.Sandbox.SetFaults(sandbox.Faults{})
	require.Equal(t, 2, h.replayAll().Replayed)
	require.Eventually(t, func() bool { return len(h.sb.Sandbox.Customers()) == 2 }, 20*time.Second, 10*time.Millisecond, h.logs.String())
	require.Empty(t, h.deadLetters())
}

func TestRunRecordsExistForEveryEventAndMatchWhatHappened(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig})
	good := h.publish("leads.x", "r-1", `{"leads":[{"id":"a","name":"Ann"},{"id":"b","name":"Bob"}]}`)
	partial := h.publish("leads.x", "r-2", `{"leads":[{"id":"c","name":"Cy"},{"id":"d","email":"nope"}]}`)
	poison := h.publish("leads.x", "r-3", `not json at all`)

	h.waitRuns(3)
	g := h.waitRun(good)
	require.Equal(t, runlog.Succeeded, g.Status)
	require.Equal(t, "r-1", g.EventID)
	require.Len(t, g.Items, 2)
	for _, it := range g.Items {
		require.Equal(t, outcome.Created, it.Outcome)
		require.NotEmpty(t, it.CustomerID)
		require.Equal(t, 1, it.Attempts)
	}
	require.False(t, g.Ended.Before(g.Started))

	p := h.waitRun(partial)
	require.Equal(t, runlog.Partial, p.Status)
	require.Equal(t, outcome.Created, p.Items[0].Outcome)
	require.Equal(t, outcome.Validation, p.Items[1].Outcome)
	require.Contains(t, p.Items[1].Error, "not an email address")

	x := h.waitRun(poison)
	require.Equal(t, runlog.DeadLettered, x.Status)
	require.Contains(t, x.Error, "not valid JSON")
	require.Empty(t, x.Items)

	classes := map[outcome.Outcome]bool{}
	for _, d := range h.deadLetters() {
		classes[d.Class] = true
	}
	require.Equal(t, map[outcome.Outcome]bool{outcome.Validation: true, outcome.InvalidEvent: true}, classes)
}

func TestADeadLetterStreamDeletedWhileRunningIsRecreatedAndTheEventDeadLetteredWithoutARedelivery(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("email")})
	// An operator deletes the dead-letter stream and its payload bucket:
	// the worker recreates them when it next needs them.
	ctx := context.Background()
	require.NoError(t, h.js.DeleteStream(ctx, dlq.StreamDefault))
	require.NoError(t, h.js.DeleteObjectStore(ctx, dlq.PayloadsBucket))

	seq := h.publish("leads.x", "u-1", `{"email":"not-an-email"}`)
	run := h.waitRun(seq)
	require.Equal(t, runlog.Failed, run.Status)
	require.Equal(t, fmt.Sprintf("LEADS-%d-1-default", seq), run.ID, "processed at its first delivery")
	h.waitIdle("default")
	require.Len(t, h.deadLetters(), 1)
	_, err := h.js.ObjectStore(ctx, dlq.PayloadsBucket)
	require.NoError(t, err, "the payload bucket is recreated too")
}

func TestADeadLetterThatCannotBeStoredPausesTheWorkflowAndHoldsTheEventWithoutSpendingDeliveries(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config: testWorkflow("email"),
		worker: func(c *Config) { c.AckWait, c.DeadLetter.MaxBytes = 1500*time.Millisecond, 64 },
	})
	ctx := context.Background()
	seq := h.publish("leads.x", "full-1", `{"email":"not-an-email"}`)
	var st replica.WorkflowState
	require.Eventually(t, func() bool {
		st = h.workflowState("default")
		return st.State == replica.StatePaused
	}, 20*time.Second, 20*time.Millisecond, "the workflow never paused\n%s", h.logs.String())
	require.True(t, st.StoreFailed, "paused because the dead letter cannot be stored, not because of Kustomer")
	require.Contains(t, st.Reason, "cannot store the dead letter")
	// Held over several ack waits: never redelivered.
	require.Never(t, func() bool {
		c, err := h.js.Consumer(ctx, leads.StreamDefault, leads.ConsumerPrefixDefault+"default")
		require.NoError(t, err)
		info, err := c.Info(ctx)
		require.NoError(t, err)
		return info.NumRedelivered > 0 || info.Delivered.Consumer > 1
	}, 4*time.Second, 100*time.Millisecond, "the held event was redelivered\n%s", h.logs.String())

	// Room in the dead-letter stream: the event is dead-lettered, at its
	// first delivery, and the workflow runs again.
	dl, err := h.js.Stream(ctx, dlq.StreamDefault)
	require.NoError(t, err)
	cfg := dl.CachedInfo().Config
	cfg.MaxBytes = -1
	_, err = h.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	run := h.waitRun(seq)
	require.Equal(t, fmt.Sprintf("LEADS-%d-1-default", seq), run.ID)
	require.Len(t, h.deadLetters(), 1)
	require.Eventually(t, func() bool { return h.workflowState("default").State == replica.StateRunning }, 20*time.Second, 20*time.Millisecond)
}

func TestCustomResultsAndDeadLetterSubjectsAreCapturedByTheStreams(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("custom-result-subjects")})
	ok := h.publish("leads.x", "c-1", `{"email":"jane@example.com"}`)
	bad := h.publish("leads.x", "c-2", `{"email":"nope"}`)
	require.Equal(t, runlog.Succeeded, h.waitRun(ok).Status)
	require.Equal(t, runlog.Failed, h.waitRun(bad).Status)

	ctx := context.Background()
	st, err := h.js.Stream(ctx, result.StreamDefault)
	require.NoError(t, err)
	msg, err := st.GetLastMsgForSubject(ctx, "crm.customers.created")
	require.NoError(t, err)
	require.Equal(t, "c-1", msg.Header.Get(result.HeaderEventID))
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	require.Equal(t, "c-2", dead[0].MsgID)
}

func TestARunLogOrLedgerDeletedWhileRunningIsRecreatedAndTheEventProcessedOnce(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: leadConfig()})
	ctx := context.Background()
	require.NoError(t, h.js.DeleteStream(ctx, runlog.StreamDefault))
	require.NoError(t, h.js.DeleteKeyValue(ctx, ledger.BucketDefault))

	seq := h.publish("leads.web", "gone-1", `{"id":"ext-gone-1","name":"Gone"}`)
	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.Equal(t, fmt.Sprintf("LEADS-%d-1-default", seq), run.ID, "processed at its first delivery, not delivered until max_deliveries")
	h.waitIdle("default")
	_, err := h.js.KeyValue(ctx, ledger.BucketDefault)
	require.NoError(t, err, "the ledger bucket is recreated")
	st := h.workflowState("default")
	require.Equal(t, replica.StateRunning, st.State, "a deleted ledger is not Kustomer failing: %s", st.Reason)
	require.Len(t, run.Items, 1)
	require.Equal(t, 1, run.Items[0].Attempts, "waiting for the ledger spends no attempt (and so is no failure for the breaker)")
	h.requireEachCreatedOnce([]string{"ext-gone-1"})
	require.Empty(t, h.deadLetters())
}

// A renamed field upstream must not drop a whole batch silently: a Loop
// event without its array is an invalid event, dead-lettered with the
// reason; an explicit empty array is a run of 0 items.
func TestALoopEventWithoutItsArrayIsDeadLetteredAndAnEmptyArrayIsZeroItems(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig})
	missing := h.publish("leads.x", "m-1", `{"source":"x"}`)
	notArray := h.publish("leads.x", "m-2", `{"leads":{"id":"a"}}`)
	empty := h.publish("leads.x", "m-3", `{"leads":[]}`)

	h.waitRuns(3)
	m := h.waitRun(missing)
	require.Equal(t, runlog.DeadLettered, m.Status)
	require.Contains(t, m.Error, "loop: the event has no array there")
	n := h.waitRun(notArray)
	require.Equal(t, runlog.DeadLettered, n.Status)
	require.Contains(t, n.Error, "expected an array, got an object")
	e := h.waitRun(empty)
	require.Equal(t, runlog.Succeeded, e.Status)
	require.Empty(t, e.Items)

	dead := h.deadLetters()
	require.Len(t, dead, 2)
	for _, d := range dead {
		require.Equal(t, outcome.InvalidEvent, d.Class)
		require.Contains(t, d.Error, `(template "{{trigger.leads}}")`)
	}
}
