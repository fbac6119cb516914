package worker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// sandboxAdded are the attributes Kustomer adds to what was sent.
var sandboxAdded = map[string]bool{"displayName": true, "createdAt": true, "updatedAt": true}

func sentAttributes(c sandbox.Customer) map[string]any {
	out := map[string]any{}
	for k, v := range c.Attributes {
		if !sandboxAdded[k] {
			out[k] = v
		}
	}
	if emails, ok := out["emails"].([]any); ok {
		for _, e := range emails {
			delete(e.(map[string]any), "id")
		}
	}
	return out
}

var fieldsConfig = testWorkflow("fields")

func TestEventBecomesCustomerWithExactlyTheMappedFields(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: fieldsConfig})
	seq := h.publish("leads.web", "evt-1", `{"id":"L-1","first":"Jane","last":"Doe","email":" Jane@Example.com ","phone":"","score":"42","ignored":"x"}`)

	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.Len(t, run.Items, 1)

	customers := h.sb.Sandbox.Customers()
	require.Len(t, customers, 1)
	require.Equal(t, customers[0].ID, run.Items[0].CustomerID)
	require.Equal(t, map[string]any{
		"externalId": "L-1",
		"name":       "Jane Doe",
		"emails":     []any{map[string]any{"email": "jane@example.com", "type": "home"}},
		"custom":     map[string]any{"sourceStr": "web-form", "scoreNum": float64(42)},
	}, sentAttributes(customers[0]), "blank phone left out, email normalised, number coerced, unmapped event fields not sent")
	h.requireNoSecretInLogs()
}

func TestSeedSampleEventAndConfigCreateTheCustomerAndPublishTheResult(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{}) // the built-in workflow is the seed's sample request
	seq := h.publish("leads.new", "seed-1", `{"name":"Jane Doe","emails":[{"email":"jane@x.com"}],"phones":[{"phone":"+12125550100"}]}`)

	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)
	customers := h.sb.Sandbox.Customers()
	require.Len(t, customers, 1)
	require.Equal(t, "Jane Doe", customers[0].Attributes["name"])

	// The result downstream nodes read: {"data":{"id":…,"attributes":{…}}}.
	ctx := context.Background()
	st, err := h.js.Stream(ctx, result.StreamDefault)
	require.NoError(t, err)
	msg, err := st.GetLastMsgForSubject(ctx, "kustomer.customers.created.default")
	require.NoError(t, err)
	var res struct {
		Data struct {
			ID         string         `json:"id"`
			Attributes map[string]any `json:"attributes"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(msg.Data, &res))
	require.Equal(t, customers[0].ID, res.Data.ID)
	require.Equal(t, "Jane Doe", res.Data.Attributes["name"])
	require.Equal(t, "jane@x.com", res.Data.Attributes["emails"].([]any)[0].(map[string]any)["email"])
	require.Equal(t, "seed-1", msg.Header.Get(result.HeaderEventID))
	require.Equal(t, "0", msg.Header.Get(result.HeaderItem))
	h.requireNoSecretInLogs()
}

func TestRepublishedEventWithTheSameIDIsProcessedOnce(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	body := `{"name":"Omar Haddad","emails":"omar@example.com"}`
	seq := h.publish("leads.new", "lead-42", body)

	m, err := h.js.Publish(context.Background(), "leads.new", []byte(body), jetstream.WithMsgID("lead-42"))
	require.NoError(t, err)
	require.True(t, m.Duplicate, "JetStream de-duplicates the same Nats-Msg-Id")

	h.waitRun(seq)
	h.waitIdle("default")
	require.Len(t, h.sb.Sandbox.Customers(), 1)
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Len(t, recs, 1)
}

func TestServerErrorIsRetriedThenSucceeds(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("retry-five-server-errors"),
		sandbox: sandbox.Config{ErrorRate: 1},
	})
	probed := h.sb.Sandbox.Stats().ServerErrors // the start probe's answer
	seq := h.publish("leads.new", "retry-1", `{"name":"Mei Chen"}`)
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().ServerErrors > probed }, 10*time.Second, 2*time.Millisecond)
	h.sb.Sandbox.SetFaults(sandbox.Faults{})

	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.GreaterOrEqual(t, run.Items[0].Attempts, 2)
	require.Len(t, h.sb.Sandbox.Customers(), 1)
	h.requireNoSecretInLogs()
}

// badBody sends what the mapping would never produce, so Kustomer itself
// answers 400.
type badBody struct{ Kustomer }

func (b badBody) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	m := map[string]any{}
	if err := json.Unmarshal(body.(json.RawMessage), &m); err != nil {
		return nil, err
	}
	m["notAField"] = true
	return b.Kustomer.CreateCustomer(ctx, m)
}

func TestBadRequestIsNotRetriedAndIsDeadLettered(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{wrap: func(k Kustomer) Kustomer { return badBody{k} }})
	payload := `{"name":"Liam Murphy"}`
	seq := h.publish("leads.new", "bad-1", payload)

	run := h.waitRun(seq)
	require.Equal(t, runlog.Failed, run.Status)
	require.Equal(t, 1, run.Items[0].Attempts)
	require.Equal(t, outcome.Permanent, run.Items[0].Outcome)
	require.Equal(t, 1, h.sb.Sandbox.Stats().BadRequests)
	require.Empty(t, h.sb.Sandbox.Customers())

	store, err := dlq.OpenStore(context.Background(), h.js, dlq.StreamDefault)
	require.NoError(t, err)
	recs, err := store.List(context.Background(), dlq.Filter{All: true})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, outcome.Permanent, recs[0].Class)
	require.Equal(t, 400, recs[0].StatusCode)
	require.Equal(t, payload, string(recs[0].Payload))
	require.Equal(t, seq, recs[0].StreamSeq)
	h.requireNoSecretInLogs()
}

func TestAPIKeyAppearsInNoLogLineEvenWhenKustomerRejectsIt(t *testing.T) {
	t.Parallel()
	// The sandbox expects another key: every request is a 401 (systemic), the
	// workflow pauses, and everything about it is logged.
	h := setup(t, harnessOptions{sandbox: sandbox.Config{APIKey: "the-right-key"}})
	h.publish("leads.new", "key-1", `{"name":"Sofia Rossi"}`)
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().Unauthorized >= 1 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		st := h.workflowState("default")
		return st.State == replica.StatePaused && strings.Contains(st.Reason, "401")
	}, 10*time.Second, 5*time.Millisecond, h.logs.String())
	require.Empty(t, h.sb.Sandbox.Customers())
	h.requireNoSecretInLogs()
}
