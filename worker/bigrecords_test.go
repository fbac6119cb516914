package worker

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// smallPayload runs the server with a 64 KiB max_payload.
func smallPayload(o *server.Options) { o.MaxPayload = 64 << 10 }

// payloadLimits are the server settings a big-record test runs under: a
// small max_payload, and the server's default.
var payloadLimits = map[string]func(*server.Options){"64KiB": smallPayload, "default": nil}

// store opens the dead-letter store.
func (h *harness) store() *dlq.Store {
	h.t.Helper()
	s, err := dlq.OpenStore(context.Background(), h.js, dlq.StreamDefault)
	require.NoError(h.t, err)
	return s
}

// payloadObjects lists the names in the dead-letter payloads bucket.
func (h *harness) payloadObjects() []string {
	h.t.Helper()
	obs, err := h.js.ObjectStore(context.Background(), dlq.PayloadsBucket)
	require.NoError(h.t, err)
	infos, err := obs.List(context.Background())
	if err != nil {
		require.ErrorIs(h.t, err, jetstream.ErrNoObjectsFound)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

// loopOf is a Loop event of n items, each the JSON value item(i).
func loopOf(n int, item func(int) string) string {
	var b strings.Builder
	b.WriteString(`{"leads":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(item(i))
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestATenThousandItemLoopThatFailsWholeIsDeadLetteredOnceWithEveryItem(t *testing.T) {
	t.Parallel()
	for name, limit := range payloadLimits {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, harnessOptions{nats: limit, config: testWorkflow("loop-emails")})
			seq := h.publish("leads.batch", "big-loop", loopOf(10000, func(int) string { return `"x"` }))
			run := h.waitRun(seq)
			require.Equal(t, runlog.Failed, run.Status)
			require.Len(t, run.Items, 10000, "the run record is complete")
			require.Zero(t, run.ItemsOmitted)
			for i, it := range run.Items {
				require.Equal(t, i, it.Index)
				require.Contains(t, it.Error, "is not an email address")
			}
			got, err := h.runs.Get(context.Background(), run.ID)
			require.NoError(t, err)
			require.Len(t, got.Items, 10000)

			h.waitIdle("batch")
			dead := h.deadLetters()
			require.Len(t, dead, 1, "dead-lettered once")
			require.Equal(t, outcome.Validation, dead[0].Class)
			require.Len(t, dead[0].Items, 10000)
			entry, err := h.store().Get(context.Background(), dead[0].ID)
			require.NoError(t, err)
			require.Equal(t, dead[0].Items, entry.Items)
		})
	}
}

func TestALoopWithThousandsOfScatteredFailuresKeepsItsHeadersBoundedAndItsItemsComplete(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{nats: smallPayload, config: testWorkflow("loop-upper-emails")})
	// Even items are text that is no email (validation); odd items are
	// numbers upper() cannot take (mapping): two entries of 5,000 scattered
	// items each.
	seq := h.publish("leads.batch", "scattered", loopOf(10000, func(i int) string {
		if i%2 == 0 {
			return `"x"`
		}
		return "1"
	}))
	run := h.waitRun(seq)
	require.Equal(t, runlog.Failed, run.Status)
	require.Len(t, run.Items, 10000)
	h.waitIdle("batch")

	dead := h.deadLetters()
	require.Len(t, dead, 2)
	st, err := h.js.Stream(context.Background(), dlq.StreamDefault)
	require.NoError(t, err)
	for _, d := range dead {
		require.Len(t, d.Items, 5000, "%s: the complete item list", d.Class)
		odd := d.Class == outcome.Mapping
		for _, i := range d.Items {
			require.Equal(t, odd, i%2 == 1)
		}
		raw, err := st.GetMsg(context.Background(), d.ID)
		require.NoError(t, err)
		require.Equal(t, "5000", raw.Header.Get(dlq.HeaderItemsCount))
		for k, vs := range raw.Header {
			require.LessOrEqual(t, len(strings.Join(vs, "")), 4200, "header %s is bounded", k)
		}
	}
}

func TestAnEventJustBelowMaxPayloadThatFailsIsDeadLetteredAndReplayedByteForByte(t *testing.T) {
	t.Parallel()
	for name, limit := range payloadLimits {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			broken := testWorkflow("name")
			h := setup(t, harnessOptions{nats: limit, config: broken})
			max := int(h.nc.MaxPayload())
			filler := strings.Repeat("n", max-200)
			payload := `{"short":"Ann","name":"` + filler + `"}`
			seq := h.publish("leads.x", "near-limit", payload)

			run := h.waitRun(seq)
			require.Equal(t, runlog.Failed, run.Status)
			require.Contains(t, run.Items[0].Error, "characters, at most")
			h.waitIdle("default")
			dead := h.deadLetters()
			require.Len(t, dead, 1)
			entry, err := h.store().Get(context.Background(), dead[0].ID)
			require.NoError(t, err)
			require.True(t, bytes.Equal([]byte(payload), entry.Payload), "dead letter payload byte for byte")
			require.NotEmpty(t, entry.Object)

			// The fix: the name comes from another field. The replay carries
			// the payload in an object, the worker reads it back whole.
			h.stopWorker()
			h.start(strings.Replace(broken, "trigger.name", "trigger.short", 1))
			require.Equal(t, 1, h.replayAll().Replayed)
			require.Eventually(t, func() bool { return len(h.sb.Sandbox.Customers()) == 1 }, 20*time.Second, 10*time.Millisecond, h.logs.String())
			h.waitIdle("default")
			require.Empty(t, h.deadLetters())
			require.Eventually(t, func() bool { return len(h.payloadObjects()) == 0 }, 10*time.Second, 10*time.Millisecond,
				"the entry's object and the replay's are removed: %v", h.payloadObjects())
		})
	}
}

// An event whose publisher set a Nats-Msg-Id as long as JetStream takes
// (its headers just under 64 KiB) is processed like any other: its
// result's headers, which add a few of their own, hold the id's digest.
func TestAnEventWithALongMsgIDIsCreatedAndItsResultPublished(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	id := strings.Repeat("x", 65400)
	rec := h.waitRun(h.publish("leads.web", id, `{"name":"Ann"}`))
	require.Equal(t, runlog.Succeeded, rec.Status)
	_, customer := h.lastResultOutcome("default")
	require.Equal(t, rec.Items[0].CustomerID, customer)
	require.Empty(t, h.deadLetters())
}
