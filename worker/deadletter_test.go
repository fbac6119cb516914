package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/outcome"
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
func (h *harness) waitRuns(n int) []RunRecord {
	h.t.Helper()
	var recs []RunRecord
	require.Eventually(h.t, func() bool {
		var err error
		recs, err = h.runs.List(context.Background(), RunFilter{})
		return err == nil && len(recs) >= n
	}, 20*time.Second, 20*time.Millisecond, "fewer than %d runs\nlogs:\n%s", n, h.logs.String())
	return recs
}

const loopConfig = `
workflows:
  - name: batch
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
      emails: "{{item.email}}"
`

// The fix a user makes after reading the dead letter: "(at)" spelled out.
const fixedLoopConfig = `
workflows:
  - name: batch
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
      emails: "{{replace(item.email ?? '', '(at)', '@')}}"
`

func TestReplayOfAPartialLoopCreatesOnlyTheFailedItemsWithTheFixedMapping(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig})
	payload := `{"leads":[{"id":"a","name":"Ann","email":"ann@x.com"},{"id":"b","name":"Bob","email":"bob(at)x.com"},{"id":"c","name":"Cy"}]}`
	seq := h.publish("leads.batch", "batch-1", payload)

	run := h.waitRun(seq)
	require.Equal(t, RunPartial, run.Status)
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
		config: `
workflows:
  - name: default
    subject: "leads.>"
    retry: {max_attempts: 2, initial_delay: 10ms, max_delay: 20ms, jitter: 0}
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
`,
		sandbox: sandbox.Config{ErrorRate: 1},
		worker:  func(c *Config) { c.BreakerThreshold = 1000 }, // dead-letter, do not pause
	})
	s1 := h.publish("leads.a", "e-1", `{"id":"1","name":"Ann"}`)
	s2 := h.publish("leads.a", "e-2", `{"id":"2","name":"Bob"}`)
	for _, seq := range []uint64{s1, s2} {
		run := h.waitRun(seq)
		require.Equal(t, RunFailed, run.Status)
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
	require.Equal(t, RunSucceeded, g.Status)
	require.Equal(t, "r-1", g.EventID)
	require.Len(t, g.Items, 2)
	for _, it := range g.Items {
		require.Equal(t, outcome.Created, it.Outcome)
		require.NotEmpty(t, it.CustomerID)
		require.Equal(t, 1, it.Attempts)
	}
	require.False(t, g.Ended.Before(g.Started))

	p := h.waitRun(partial)
	require.Equal(t, RunPartial, p.Status)
	require.Equal(t, outcome.Created, p.Items[0].Outcome)
	require.Equal(t, outcome.Validation, p.Items[1].Outcome)
	require.Contains(t, p.Items[1].Error, "not an email address")

	x := h.waitRun(poison)
	require.Equal(t, RunDeadLettered, x.Status)
	require.Contains(t, x.Error, "not valid JSON")
	require.Empty(t, x.Items)

	classes := map[outcome.Outcome]bool{}
	for _, d := range h.deadLetters() {
		classes[d.Class] = true
	}
	require.Equal(t, map[outcome.Outcome]bool{outcome.Validation: true, outcome.InvalidEvent: true}, classes)
}

func TestFailedDeadLetterPublishLeavesTheEventUnacknowledged(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: `
workflows:
  - name: default
    subject: "leads.>"
    inputs:
      emails: "{{trigger.email}}"
`})
	// An operator deletes the dead-letter stream: every dead-letter publish
	// now fails until it is back.
	ctx := context.Background()
	dlqCfg, err := h.js.Stream(ctx, dlq.StreamDefault)
	require.NoError(t, err)
	saved := dlqCfg.CachedInfo().Config
	require.NoError(t, h.js.DeleteStream(ctx, dlq.StreamDefault))

	seq := h.publish("leads.x", "u-1", `{"email":"not-an-email"}`)
	require.Eventually(t, func() bool {
		c, err := h.js.Consumer(ctx, StreamDefault, ConsumerPrefixDefault+"default")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumRedelivered >= 1
	}, 20*time.Second, 20*time.Millisecond, "the event was not redelivered\n%s", h.logs.String())
	recs, err := h.runs.List(ctx, RunFilter{})
	require.NoError(t, err)
	require.Empty(t, recs, "no run record while the outcome is not durable")

	_, err = h.js.CreateStream(ctx, saved)
	require.NoError(t, err)
	run := h.waitRun(seq)
	require.Equal(t, RunFailed, run.Status)
	h.waitIdle("default")
	require.Len(t, h.deadLetters(), 1)
}

func TestCustomResultsAndDeadLetterSubjectsAreCapturedByTheStreams(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: `
workflows:
  - name: default
    subject: "leads.>"
    results_subject: crm.customers.created
    dead_letter_subject: crm.failed
    inputs:
      emails: "{{trigger.email}}"
`})
	ok := h.publish("leads.x", "c-1", `{"email":"jane@example.com"}`)
	bad := h.publish("leads.x", "c-2", `{"email":"nope"}`)
	require.Equal(t, RunSucceeded, h.waitRun(ok).Status)
	require.Equal(t, RunFailed, h.waitRun(bad).Status)

	ctx := context.Background()
	st, err := h.js.Stream(ctx, ResultsStreamDefault)
	require.NoError(t, err)
	msg, err := st.GetLastMsgForSubject(ctx, "crm.customers.created")
	require.NoError(t, err)
	require.Equal(t, "c-1", msg.Header.Get(HeaderEventID))
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	require.Equal(t, "c-2", dead[0].MsgID)
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
	require.Equal(t, RunDeadLettered, m.Status)
	require.Contains(t, m.Error, "loop: the event has no array there")
	n := h.waitRun(notArray)
	require.Equal(t, RunDeadLettered, n.Status)
	require.Contains(t, n.Error, "expected an array, got an object")
	e := h.waitRun(empty)
	require.Equal(t, RunSucceeded, e.Status)
	require.Empty(t, e.Items)

	dead := h.deadLetters()
	require.Len(t, dead, 2)
	for _, d := range dead {
		require.Equal(t, outcome.InvalidEvent, d.Class)
		require.Contains(t, d.Error, `(template "{{trigger.leads}}")`)
	}
}
