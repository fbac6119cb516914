package worker

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// publishWith puts an event with extra headers on the leads stream and
// returns its stream sequence.
func (h *harness) publishWith(subject, body string, headers map[string]string) uint64 {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	ack, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(h.t, err)
	return ack.Sequence
}

func (h *harness) replay(f dlq.Filter) dlq.ReplayResult {
	h.t.Helper()
	store, err := dlq.OpenStore(context.Background(), h.js, dlq.StreamDefault)
	require.NoError(h.t, err)
	res, err := store.Replay(context.Background(), f, dlq.ReplayOptions{})
	require.NoError(h.t, err)
	return res
}

func TestKsyncHeadersFromAPublisherNeitherBorrowAnotherEventsCustomerNorSkipTheEvent(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("forged")})
	first := h.publish("leads.x", "lead-ann", `{"leads":[{"name":"Ann"}]}`)
	ann := h.waitRun(first)
	require.Equal(t, runlog.Succeeded, ann.Status)

	// A plain publish claiming to be Ann's event, or a replay for another
	// workflow, or a replay of item 1 only.
	borrow := h.publishWith("leads.x", `{"leads":[{"name":"Bob"}]}`, map[string]string{
		nats.MsgIdHdr: "lead-bob", dlq.HeaderMsgID: "lead-ann", dlq.HeaderStreamSeq: "1",
	})
	skip := h.publishWith("leads.x", `{"leads":[{"name":"Cy"}]}`, map[string]string{
		dlq.HeaderReplayWorkflow: "other", dlq.HeaderReplayOf: "3", dlq.HeaderReplaySig: "00",
	})
	limit := h.publishWith("leads.x", `{"leads":[{"name":"Di"},{"name":"Ed"}]}`, map[string]string{
		dlq.HeaderReplayItems: "1", dlq.HeaderReplayEventKey: "lead-ann", dlq.HeaderReplayWorkflow: "forged",
	})

	bob := h.waitRun(borrow)
	require.Equal(t, runlog.Succeeded, bob.Status)
	require.Equal(t, "lead-bob", bob.EventID)
	require.Equal(t, outcome.Created, bob.Items[0].Outcome, "not 'already created' under Ann's key")
	require.NotEqual(t, ann.Items[0].CustomerID, bob.Items[0].CustomerID)

	cy := h.waitRun(skip)
	require.Equal(t, runlog.Succeeded, cy.Status, "processed, not acknowledged and skipped")
	require.False(t, cy.Replay)
	require.Nil(t, cy.ReplayOf)

	di := h.waitRun(limit)
	require.Len(t, di.Items, 2, "every item runs")

	names := map[any]int{}
	for _, c := range h.sb.Sandbox.Customers() {
		names[c.Attributes["name"]]++
	}
	require.Equal(t, map[any]int{"Ann": 1, "Bob": 1, "Cy": 1, "Di": 1, "Ed": 1}, names)
	var forged dto.Metric
	require.NoError(t, h.worker.metrics.ForgedReplays.WithLabelValues("forged").Write(&forged))
	require.Equal(t, 3.0, forged.GetCounter().GetValue(), "each forged marker is counted")
}

var signupConfig = testWorkflow("signup")

var fixedSignupConfig = testWorkflow("signup-fixed")

func TestAReplayKeepsTheOriginalEventIDAndLinksItsDeadLetterAndRuns(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: signupConfig})
	seq := h.publish("leads.x", "lead-42", `{"name":"Ann","email":"ann(at)x.com"}`)
	orig := h.waitRun(seq)
	require.Equal(t, runlog.Failed, orig.Status)
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	first := dead[0]
	require.Equal(t, orig.ID, first.Run)
	require.Equal(t, "lead-42", first.EventKey)

	// Replayed without a fix: it fails again, and the new dead letter says
	// it is a replay, of which entry, with the attempts before.
	require.Equal(t, 1, h.replay(dlq.Filter{All: true}).Replayed)
	var again dlq.Record
	require.Eventually(t, func() bool {
		d := h.deadLetters()
		if len(d) == 1 && d[0].ID != first.ID {
			again = d[0]
			return true
		}
		return false
	}, 20*time.Second, 20*time.Millisecond, h.logs.String())
	require.Equal(t, "lead-42", again.MsgID, "the original event id")
	require.Equal(t, "lead-42", again.EventKey)
	require.Equal(t, first.ID, again.ReplayedFrom)
	require.Equal(t, 1, again.Replays)
	require.Equal(t, first.Attempts, again.PriorAttempts)
	require.Equal(t, orig.ID, again.OriginalRun)
	require.True(t, first.FirstFailure.Equal(again.FirstFailure), "the event's first failure")
	require.NotEqual(t, orig.ID, again.Run)

	// The dead letter is published before the run record is written.
	var failed runlog.Record
	require.Eventually(t, func() bool {
		var err error
		failed, err = h.runs.Get(context.Background(), again.Run)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "no run %s", again.Run)
	require.Equal(t, "lead-42", failed.EventID)
	require.Equal(t, &runlog.Replay{DeadLetter: first.ID, Stream: dlq.StreamDefault, Run: orig.ID, OriginalRun: orig.ID, Count: 1, Attempts: first.Attempts}, failed.ReplayOf)

	// Fixed and replayed again: the customer is created; the run and the
	// result carry the original event id and the whole chain.
	h.stopWorker()
	h.start(fixedSignupConfig)
	require.Equal(t, 1, h.replay(dlq.Filter{All: true}).Replayed)
	require.Eventually(t, func() bool { return len(h.sb.Sandbox.Customers()) == 1 }, 20*time.Second, 20*time.Millisecond, h.logs.String())
	h.waitIdle("signup")
	runs := h.waitRuns(3)
	ok := runs[0]
	require.Equal(t, runlog.Succeeded, ok.Status)
	require.Equal(t, "lead-42", ok.EventID)
	require.True(t, ok.Replay)
	require.Equal(t, &runlog.Replay{DeadLetter: again.ID, Stream: dlq.StreamDefault, Run: again.Run, OriginalRun: orig.ID, Count: 2, Attempts: first.Attempts + again.Attempts}, ok.ReplayOf)

	st, err := h.js.Stream(context.Background(), result.StreamDefault)
	require.NoError(t, err)
	res, err := st.GetLastMsgForSubject(context.Background(), result.SubjectsDefault)
	require.NoError(t, err)
	require.Equal(t, "lead-42", res.Header.Get(result.HeaderEventID))
	require.Empty(t, h.deadLetters())
}

func TestAReplayForAWorkflowNoLongerConfiguredIsKeptAsADeadLetter(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("old-email")})
	seq := h.publish("leads.x", "lead-7", `{"email":"nope"}`)
	require.Equal(t, runlog.Failed, h.waitRun(seq).Status)
	entry := h.deadLetters()[0]

	// Renamed, and two workflows now read the subject.
	h.stopWorker()
	h.start(testWorkflow("renamed-and-audit"))
	require.Equal(t, 1, h.replay(dlq.Filter{IDs: []uint64{entry.ID}}).Replayed)
	keptOf := func() []dlq.Record {
		var out []dlq.Record
		for _, d := range h.deadLetters() {
			if d.ReplayedFrom == entry.ID {
				out = append(out, d)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(keptOf()) > 0 }, 20*time.Second, 20*time.Millisecond, "the replay was dropped\n%s", h.logs.String())
	h.waitIdle("renamed")
	h.waitIdle("audit")
	kept := keptOf()
	require.Len(t, kept, 1, "kept once, not once per workflow")
	require.Equal(t, "old", kept[0].Workflow, "still the workflow it failed in")
	require.Equal(t, "lead-7", kept[0].MsgID)
	require.Equal(t, entry.ID, kept[0].ReplayedFrom)
	require.Contains(t, kept[0].Error, `workflow "old", which this worker does not run (its workflows: renamed, audit)`)
	require.Empty(t, h.sb.Sandbox.Customers())
}

// A worker whose consumers have another prefix (Config.ConsumerPrefix) is
// still found by the replay check: the consumer's metadata names its
// workflow.
func TestReplayCheckFindsAWorkflowWhoseConsumerHasAnotherPrefix(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{worker: func(c *Config) { c.ConsumerPrefix = "team-a-" }})
	check := leads.ReplayCheck(h.js)
	require.NoError(t, check(context.Background(), dlq.Record{Workflow: "default", Subject: "leads.web"}))
	err := check(context.Background(), dlq.Record{Workflow: "gone", Subject: "leads.web"})
	require.ErrorIs(t, err, leads.ErrNoWorkflow)
}
