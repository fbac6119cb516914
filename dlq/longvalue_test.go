package dlq_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// headerBytes is the size of h as encoded in a message.
func headerBytes(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// requireWhole fails unless got is want, without printing them (they are
// tens of KiB).
func requireWhole(t *testing.T, want, got, what string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %d bytes %.40q…, want %d bytes %.40q…", what, len(got), got, len(want), want)
	}
}

// publishLead publishes payload to subject on LEADS under Nats-Msg-Id id,
// as a publisher would, and returns the stored message.
func publishLead(t *testing.T, b bundle, subject, id string, payload []byte) *jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	m := nats.NewMsg(subject)
	m.Header.Set(nats.MsgIdHdr, id)
	m.Data = payload
	ack, err := b.js.PublishMsg(ctx, m)
	require.NoError(t, err)
	stored, err := b.leads.GetMsg(ctx, ack.Sequence)
	require.NoError(t, err)
	requireWhole(t, id, stored.Header.Get(nats.MsgIdHdr), "the stored Nats-Msg-Id")
	require.NoError(t, b.leads.DeleteMsg(ctx, ack.Sequence)) // leave LEADS to the replays
	return stored
}

// leadRecord is the dead letter the worker writes for the stored event m of
// workflow signup: its Nats-Msg-Id is its id and its event key.
func leadRecord(m *jetstream.RawStreamMsg) dlq.Record {
	return dlq.Record{
		Workflow: "signup", Class: outcome.Exhausted, Error: "kustomer: create: 503 unavailable", Attempts: 5, Items: []int{1},
		Subject: m.Subject, StreamSeq: m.Sequence, MsgID: m.Header.Get(nats.MsgIdHdr), EventKey: m.Header.Get(nats.MsgIdHdr),
		Payload: m.Data,
	}
}

// An event's Nats-Msg-Id is whatever its publisher chose, up to the 64 KiB
// JetStream accepts for headers: its dead letter, which copied it into two
// headers, was refused, and the event was lost after its last delivery.
func TestAnEventWithALongMsgIDIsDeadLetteredAndReplayedAsTheSameEvent(t *testing.T) {
	t.Parallel()
	for _, limit := range []int32{0, 64 << 10} {
		b := setupLimit(t, limit)
		ctx := context.Background()
		id := "lead-" + strings.Repeat("0123456789abcdef", 40<<10/16)
		// 24,000 bytes: with the id, within 64 KiB; with the id and a
		// replay's headers, not: the replay names an object.
		payload := []byte(`{"leads":[{"email":"a@x.io"},{"email":"b@x.io"}],"note":"` + strings.Repeat("n", 24000-59) + `"}`)
		m := publishLead(t, b, "leads.signup", id, payload)

		require.NoError(t, dlq.Publish(ctx, b.js, dlq.Subject("signup"), leadRecord(m)), "limit %d", limit)
		info, err := b.dlq.Info(ctx)
		require.NoError(t, err)
		raw, err := b.dlq.GetMsg(ctx, info.State.LastSeq)
		require.NoError(t, err)
		digest := dlq.BoundedValue(id)
		require.Regexp(t, `^sha256:[0-9a-f]{64}$`, digest)
		require.Equal(t, digest, raw.Header.Get(dlq.HeaderMsgID), "the header holds the id's digest")
		require.Equal(t, digest, raw.Header.Get(dlq.HeaderEventKey))
		require.Less(t, headerBytes(raw.Header), 16<<10)

		got, err := b.store.Get(ctx, raw.Sequence)
		require.NoError(t, err)
		requireWhole(t, id, got.MsgID, "the record's id")
		requireWhole(t, id, got.EventKey, "the record's event key")
		require.True(t, bytes.Equal(payload, got.Payload))
		listed, err := b.store.List(ctx, dlq.Filter{Workflow: "signup"})
		require.NoError(t, err)
		require.Equal(t, 1, len(listed))
		requireWhole(t, id, listed[0].EventKey, "the listed record's event key")

		// The replay carries the event key whole: the worker derives the
		// items' idempotency keys from it, so it is the same event.
		key, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
		require.NoError(t, err)
		rp := replayOnce(t, b, key, got.ID)
		require.Equal(t, limit != 0, rp.Object != "", "limit %d: a replay object", limit)
		requireWhole(t, id, rp.EventKey, "the replay's event key")
		require.Equal(t, digest, rp.EventID, "the id for people is its digest")
		require.Equal(t, []int{1}, rp.Items)

		// It fails again: the worker dead-letters it with the replay's
		// identity, and it can be replayed again as the same event.
		again := dlq.Record{
			Workflow: "signup", Class: outcome.Exhausted, Error: "kustomer: create: 503 unavailable", Attempts: 5,
			Subject: "leads.signup", StreamSeq: m.Sequence + 1, MsgID: rp.EventID, EventKey: rp.EventKey, Items: rp.Items, Payload: payload,
		}.ApplyReplay(rp)
		require.NoError(t, dlq.Publish(ctx, b.js, dlq.Subject("signup"), again))
		info, err = b.dlq.Info(ctx)
		require.NoError(t, err)
		rp = replayOnce(t, b, key, info.State.LastSeq)
		requireWhole(t, id, rp.EventKey, "the second replay's event key")
		require.Equal(t, digest, rp.EventID)
		require.Equal(t, 2, rp.Count)
	}
}

// replayOnce replays entry id and returns the verified replay the worker
// reads from the republished event, with its items from its object when it
// names one.
func replayOnce(t *testing.T, b bundle, key *dlq.ReplayKey, id uint64) *dlq.Replay {
	t.Helper()
	ctx := context.Background()
	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{id}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	m, err := b.leads.GetLastMsgForSubject(ctx, "leads.signup")
	require.NoError(t, err)
	rp, err := key.ReadReplay(m.Subject, m.Header, m.Data)
	require.NoError(t, err)
	require.NotNil(t, rp)
	if rp.Object != "" {
		o, err := dlq.LoadReplayObject(ctx, b.js, rp.Object)
		require.NoError(t, err)
		rp.Items = o.Items
	}
	return rp
}

func TestEveryValueFromOutsideIsBoundedInTheHeadersAndWholeInTheRecord(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	ctx := context.Background()
	items := make([]int, 5000)
	for i := range items {
		items[i] = 2 * i
	}
	long := func(prefix string, n int) string { return prefix + strings.Repeat("x", n-len(prefix)) }
	r := dlq.Record{
		Workflow: "signup", Class: outcome.Permanent, Attempts: 1, StatusCode: 400,
		Error:     "kustomer: " + strings.Repeat("e", 1<<20), // cut to 4 KiB, whole in the object
		Subject:   long("leads.signup.", 2<<10),
		StreamSeq: 4,
		MsgID:     long("lead-", 60<<10),
		EventKey:  long("key-", 50<<10),
		Code:      long("badparam", 5<<10),
		Items:     items,
		Payload:   []byte(`{}`),
		Run:       "LEADS-4-1",
	}
	got := b.publish(t, r)
	raw, err := b.dlq.GetMsg(ctx, got.ID)
	require.NoError(t, err)
	for name, v := range map[string]string{dlq.HeaderSubject: r.Subject, dlq.HeaderMsgID: r.MsgID, dlq.HeaderEventKey: r.EventKey, dlq.HeaderKustomerCode: r.Code} {
		require.Equal(t, dlq.BoundedValue(v), raw.Header.Get(name), name)
	}
	require.Less(t, headerBytes(raw.Header), 16<<10, "the worst case is far below JetStream's 64 KiB")

	r.ID, r.Time, r.Object = got.ID, got.Time, got.Object
	require.Equal(t, r, got, "the record is whole")

	// Short values are kept as they are.
	short := rec("signup", outcome.Permanent, 5, `{}`)
	short.Code = "badparam"
	short.EventKey = strings.Repeat("k", dlq.MaxValueLen)
	gotShort := b.publish(t, short)
	require.Empty(t, gotShort.Object, "nothing to keep in an object")
	raw, err = b.dlq.GetMsg(ctx, gotShort.ID)
	require.NoError(t, err)
	require.Equal(t, "lead-5", raw.Header.Get(dlq.HeaderMsgID))
	require.Equal(t, short.EventKey, raw.Header.Get(dlq.HeaderEventKey))
	require.Equal(t, "leads.signup", raw.Header.Get(dlq.HeaderSubject))
}

// A key near JetStream's limit on headers cannot travel in a replay's
// headers with the rest: replaying it under another key could create its
// items again, so it is kept and the operator told why.
func TestAnEntryWhoseEventKeyCannotTravelInAReplayIsKept(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := strings.Repeat("k", 65000) // still a Nats-Msg-Id JetStream stores
	m := publishLead(t, b, "leads.signup", id, []byte(`{"name":"Ada"}`))
	require.NoError(t, dlq.Publish(ctx, b.js, dlq.Subject("signup"), leadRecord(m)))
	ok := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	// A long key with an item list too long for a header: the items go to
	// the replay's object, the key fits.
	many := rec("signup", outcome.Exhausted, 2, `{"leads":[]}`)
	many.EventKey = strings.Repeat("m", 60<<10)
	for i := range 10000 {
		many.Items = append(many.Items, 2*i)
	}
	many = b.publish(t, many)

	for _, dry := range []bool{true, false} {
		res, err := b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{DryRun: dry})
		require.NoError(t, err)
		require.Equal(t, 1, len(res.Kept), "dry run %v: entries kept", dry)
		require.ErrorIs(t, res.Kept[0].Reason, dlq.ErrEventKeyTooLong)
		requireWhole(t, id, res.Kept[0].Record.EventKey, "the kept record's event key")
		require.Equal(t, 2, len(res.Entries))
		require.Equal(t, []uint64{ok.ID, many.ID}, []uint64{res.Entries[0].ID, res.Entries[1].ID}, "the others are replayed")
	}
	require.Len(t, consumeLeads(t, b), 2)
	list, err := b.store.List(ctx, dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, 1, len(list), "the entry stays")
	requireWhole(t, id, list[0].MsgID, "the kept entry's id")
}
