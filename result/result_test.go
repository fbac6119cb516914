package result

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestAResultCarriesTheSeedsReturnsShapeAndTheHeadersOfItsEvent(t *testing.T) {
	t.Parallel()
	m, err := Result{Workflow: "wf", EventID: "lead-1", StreamSeq: 42, Item: 3, CustomerID: "c-1",
		Outcome: outcome.Updated, Attributes: json.RawMessage(`{"name":"Ann"}`), Sent: "abc"}.Msg("kustomer.customers.created.wf")
	require.NoError(t, err)
	require.JSONEq(t, `{"data":{"id":"c-1","attributes":{"name":"Ann"}}}`, string(m.Data))
	require.Equal(t, "wf", m.Header.Get(HeaderWorkflow))
	require.Equal(t, "lead-1", m.Header.Get(HeaderEventID))
	require.Equal(t, "42", m.Header.Get(HeaderEventSeq))
	require.Equal(t, "3", m.Header.Get(HeaderItem))
	require.Equal(t, "c-1", m.Header.Get(HeaderCustomer))
	require.Equal(t, "updated", m.Header.Get(HeaderOutcome))
	require.True(t, strings.HasPrefix(m.Header.Get(nats.MsgIdHdr), "ksync-result-wf-"))
}

func TestAResultsIDChangesWithTheEventTheItemAndTheBodySentNotWithItsLength(t *testing.T) {
	t.Parallel()
	id := func(r Result) string {
		m, err := r.Msg("s")
		require.NoError(t, err)
		return m.Header.Get(nats.MsgIdHdr)
	}
	base := Result{Workflow: "wf", EventID: "lead-1", Item: 0, CustomerID: "c-1", Sent: "abc"}
	require.Equal(t, id(base), id(base), "a redelivery publishes the same result")
	for _, other := range []Result{
		{Workflow: "wf", EventID: "lead-2", Item: 0, CustomerID: "c-1", Sent: "abc"},
		{Workflow: "wf", EventID: "lead-1", Item: 1, CustomerID: "c-1", Sent: "abc"},
		{Workflow: "wf", EventID: "lead-1", Item: 0, CustomerID: "c-1", Sent: "def"},
	} {
		require.NotEqual(t, id(base), id(other))
	}
	long := base
	long.EventID = strings.Repeat("x", 10_000)
	m, err := long.Msg("s")
	require.NoError(t, err)
	require.Less(t, len(m.Header.Get(HeaderEventID))+len(m.Header.Get(nats.MsgIdHdr)), 300, "a long event id goes in as a digest")
}

func TestABatchStoresMoreResultsThanItKeepsInFlightAndARepublishOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, js := natstest.Start(t).Connect(t)
	_, err := js.CreateStream(ctx, Stream(StreamDefault, 1, []string{SubjectsDefault}))
	require.NoError(t, err)
	publish := func() {
		b := NewBatch(js)
		for i := range InFlight + 10 {
			m, err := Result{Workflow: "wf", EventID: "lead-1", Item: i, CustomerID: "c", Outcome: outcome.Created}.Msg("kustomer.customers.created.wf")
			require.NoError(t, err)
			require.NoError(t, b.Publish(ctx, m))
		}
		require.NoError(t, b.Wait(ctx))
	}
	publish()
	publish()
	st, err := js.Stream(ctx, StreamDefault)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(InFlight+10), info.State.Msgs)
}
