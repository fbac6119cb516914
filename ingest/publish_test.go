package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/eventid"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestPublishingTheSameEventsTwiceStoresThemOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, js := natstest.Start(t).Connect(t)
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	require.NoError(t, err)
	evs, err := Reader{IDField: "id"}.ReadAll(strings.NewReader(`{"id":"a","name":"Ann"} {"name":"Bob"} {"name":"Bob"}`))
	require.NoError(t, err)

	acked := 0
	p := Publisher{JS: js, Window: 2, Progress: func(n int) { acked += n }}
	res, err := p.Publish(ctx, "leads.new", evs)
	require.NoError(t, err)
	require.Equal(t, Result{Subject: "leads.new", Published: 2, Duplicates: 1, Sequences: []uint64{1, 2, 2}}, res)
	require.Equal(t, 3, acked)
	res, err = p.Publish(ctx, "leads.new", evs)
	require.NoError(t, err)
	require.Equal(t, Result{Subject: "leads.new", Published: 0, Duplicates: 3, Sequences: []uint64{1, 2, 2}}, res, "a duplicate has the sequence of the event stored first")

	msg, err := st.GetMsg(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, eventid.MsgID("leads.new", "a", evs[0].Data), msg.Header.Get("Nats-Msg-Id"), "the id, scoped by subject and body")
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs)
}

func TestPublishingWhereNoStreamListensSaysSo(t *testing.T) {
	t.Parallel()
	_, js := natstest.Start(t).Connect(t)
	_, err := Publisher{JS: js}.Publish(context.Background(), "leads.new", []Event{{Line: 1, Data: []byte(`{}`), ID: "x"}})
	require.ErrorIs(t, err, ErrNoStream)
}

// The same record id on two subjects (two workflows) is two events, and a
// changed record re-sent under its id reaches the stream; an exact resend
// is still a duplicate.
func TestIDsAreScopedBySubjectAndAChangedRecordIsANewEvent(t *testing.T) {
	t.Parallel()
	_, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	ctx := context.Background()
	read := func(s string) []Event {
		evs, err := Reader{IDField: "id"}.ReadAll(strings.NewReader(s))
		require.NoError(t, err)
		return evs
	}
	p := Publisher{JS: js}
	lead := read(`{"id":"l-1","name":"Ann"}`)
	for _, subject := range []string{"leads.web", "leads.shop"} {
		res, err := p.Publish(ctx, subject, lead)
		require.NoError(t, err)
		require.Equal(t, 1, res.Published, "%s: the same id on another subject is another event", subject)
	}
	res, err := p.Publish(ctx, "leads.web", read(`{"id":"l-1","name":"Ann Lee"}`))
	require.NoError(t, err)
	require.Equal(t, 1, res.Published, "a changed record under the same id reaches the stream")
	res, err = p.Publish(ctx, "leads.web", lead)
	require.NoError(t, err)
	require.Equal(t, 1, res.Duplicates, "an exact resend stays a duplicate")
}
