package worker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/eventid"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// A changed lead re-sent under its id by kustomer-sync's publishers gets a
// new Nats-Msg-Id (its body's digest) and reaches the worker, but keeps its
// idempotency key (the id without the digest): a workflow with match
// updates the customer, one without creates nothing twice.
func TestAChangedLeadResentUnderItsIDUpdatesItsCustomerAndIsNeverCreatedTwice(t *testing.T) {
	t.Parallel()
	config := testWorkflow("upsert-and-plain")
	h := setup(t, harnessOptions{config: config})
	send := func(subject, body string) runlog.Record {
		return h.waitRun(h.publish(subject, eventid.MsgID(subject, "l-1", []byte(body)), body))
	}

	first := send("leads.web", `{"id":"l-1","name":"Ada","emails":["ada@example.com"]}`)
	require.Equal(t, outcome.Created, first.Items[0].Outcome)
	second := send("leads.web", `{"id":"l-1","name":"Ada Lovelace","emails":["ada@example.com"]}`)
	require.Equal(t, outcome.Updated, second.Items[0].Outcome, "the changed lead reached the worker and updated its customer")
	require.Equal(t, first.Items[0].CustomerID, second.Items[0].CustomerID)

	created := send("leads.shop", `{"id":"l-1","name":"Grace"}`)
	require.Equal(t, outcome.Created, created.Items[0].Outcome, "the same id on another subject is another lead")
	again := send("leads.shop", `{"id":"l-1","name":"Grace Hopper"}`)
	require.Equal(t, outcome.AlreadyCreated, again.Items[0].Outcome, "a changed lead keeps its idempotency key")
	require.Equal(t, created.Items[0].CustomerID, again.Items[0].CustomerID)
	require.Len(t, h.sb.Sandbox.Customers(), 2, "one customer per lead")
}
