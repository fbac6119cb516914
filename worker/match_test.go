package worker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// matchConfig is a workflow that matches by externalId, then email, then
// phone, and does onMatch to the customer found.
func matchConfig(onMatch string, extra ...string) string {
	return `workflows:
  - name: sync
    subject: "leads.>"
    match: [externalId, email, phone]
    on_match: ` + onMatch + "\n" + strings.Join(extra, "") + `    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
      emails: "{{trigger.emails}}"
      phones: "{{trigger.phones}}"
`
}

// itemsCounted reads kustomer_sync_items_total for a workflow and outcome.
func itemsCounted(t *testing.T, h *harness, workflow, outcome string) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, h.worker.metrics.Items.WithLabelValues(workflow, outcome).Write(&m))
	return m.GetCounter().GetValue()
}

// customersWithEmail returns the sandbox's customers that hold email.
func (h *harness) customersWithEmail(email string) []sandbox.Customer {
	var out []sandbox.Customer
	for _, c := range h.sb.Sandbox.Customers() {
		for _, e := range emailsOf(c.Attributes) {
			if e == email {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

func emailsOf(attrs map[string]any) []string {
	var out []string
	list, _ := attrs["emails"].([]any)
	for _, it := range list {
		if m, ok := it.(map[string]any); ok {
			s, _ := m["email"].(string)
			out = append(out, s)
		}
	}
	return out
}

// lastResultOutcome returns the outcome and customer headers of the
// workflow's latest result.
func (h *harness) lastResultOutcome(workflow string) (res, customer string) {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), result.StreamDefault)
	require.NoError(h.t, err)
	m, err := st.GetLastMsgForSubject(context.Background(), mapping.ResultsPrefixDefault+workflow)
	require.NoError(h.t, err)
	return m.Header.Get(result.HeaderOutcome), m.Header.Get(result.HeaderCustomer)
}

func TestTheSameLeadTwiceWithChangedFieldsUpdatesItsOneCustomerAndAnUnchangedOneSendsNothing(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: strings.Replace(matchConfig("update"), "name: sync", "name: dup", 1)})

	first := h.waitRun(h.publish("leads.web", "e-1", `{"id":"dup-1","name":"Ada","emails":["ada@example.com"],"phones":["+14155550101"]}`))
	require.Equal(t, outcome.Created, first.Items[0].Outcome)
	id := first.Items[0].CustomerID

	second := h.waitRun(h.publish("leads.web", "e-2", `{"id":"dup-1","name":"Ada Lovelace","emails":["ada.l@example.com"]}`))
	require.Equal(t, runlog.Succeeded, second.Status)
	require.Equal(t, outcome.Updated, second.Items[0].Outcome)
	require.Equal(t, id, second.Items[0].CustomerID)
	got, customer := h.lastResultOutcome("dup")
	require.Equal(t, "updated", got)
	require.Equal(t, id, customer)

	cs := h.sb.Sandbox.Customers()
	require.Len(t, cs, 1, "one customer per person")
	require.Equal(t, "Ada Lovelace", cs[0].Attributes["name"])
	require.Equal(t, []string{"ada@example.com", "ada.l@example.com"}, emailsOf(cs[0].Attributes), "the earlier email is kept, the new one added")
	require.Len(t, cs[0].Attributes["phones"], 1, "a phone the event lacks stays")
	require.Equal(t, 1, h.sb.Sandbox.Stats().Updates)

	// The same body again (a resend, a replay): nothing is sent.
	before := h.sb.Sandbox.Stats().Requests
	third := h.waitRun(h.publish("leads.web", "e-3", `{"id":"dup-1","name":"Ada Lovelace","emails":["ada.l@example.com"]}`))
	require.Equal(t, outcome.AlreadyCreated, third.Items[0].Outcome)
	require.Equal(t, before, h.sb.Sandbox.Stats().Requests, "an unchanged item costs no request")
	for _, o := range []string{"created", "updated", "already_created"} {
		require.Equal(t, 1.0, itemsCounted(t, h, "dup", o), o)
	}
}

func TestTheSameEmailUnderTwoLeadIDsIsOneCustomer(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: matchConfig("update")})

	first := h.waitRun(h.publish("leads.web", "e-1", `{"id":"lead-1","name":"Bo","emails":["Bo@Example.com"]}`))
	second := h.waitRun(h.publish("leads.web", "e-2", `{"id":"lead-2","name":"Bo Diddley","emails":["bo@example.com"],"phones":["+14155550102"]}`))
	require.Equal(t, outcome.Updated, second.Items[0].Outcome)
	require.Equal(t, first.Items[0].CustomerID, second.Items[0].CustomerID)
	require.Equal(t, []string{"externalId: lead-2 (the customer, found by another match key, keeps its own: lead-1)"}, second.Items[0].Dropped,
		"the customer keeps the identity it has in the source")

	cs := h.sb.Sandbox.Customers()
	require.Len(t, cs, 1)
	require.Equal(t, "lead-1", cs[0].Attributes["externalId"])
	require.Equal(t, "Bo Diddley", cs[0].Attributes["name"])
	require.Len(t, cs[0].Attributes["phones"], 1)
}

func TestOnMatchSkipLeavesTheCustomerUntouched(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: strings.Replace(matchConfig("skip"), "name: sync", "name: skipper", 1)})

	first := h.waitRun(h.publish("leads.web", "e-1", `{"id":"lead-1","name":"Cy","emails":["cy@example.com"]}`))
	second := h.waitRun(h.publish("leads.web", "e-2", `{"id":"lead-2","name":"Someone Else","emails":["cy@example.com"]}`))
	require.Equal(t, outcome.Skipped, second.Items[0].Outcome)
	require.Equal(t, first.Items[0].CustomerID, second.Items[0].CustomerID)
	got, customer := h.lastResultOutcome("skipper")
	require.Equal(t, "skipped", got)
	require.Equal(t, first.Items[0].CustomerID, customer)

	// The first lead changed: still skipped, and without a request.
	before := h.sb.Sandbox.Stats().Requests
	third := h.waitRun(h.publish("leads.web", "e-3", `{"id":"lead-1","name":"Cy Twombly","emails":["cy@example.com"]}`))
	require.Equal(t, outcome.Skipped, third.Items[0].Outcome)
	require.Equal(t, before, h.sb.Sandbox.Stats().Requests)

	cs := h.sb.Sandbox.Customers()
	require.Len(t, cs, 1)
	require.Equal(t, "Cy", cs[0].Attributes["name"])
	require.Equal(t, 0, h.sb.Sandbox.Stats().Updates)
	require.Equal(t, 1.0, itemsCounted(t, h, "skipper", "created"))
	require.Equal(t, 2.0, itemsCounted(t, h, "skipper", "skipped"))
}

func TestAnUpdateBeyondTenEmailsKeepsTheLimitAndRecordsWhatWasDropped(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: matchConfig("update")})
	var emails []any
	for i := range 9 {
		emails = append(emails, map[string]any{"email": fmt.Sprintf("dee%d@example.com", i)})
	}
	existing, err := h.sb.Client(t, kustomer.Config{APIKey: testAPIKey}).CreateCustomer(t.Context(), map[string]any{"name": "Dee", "emails": emails})
	require.NoError(t, err)

	rec := h.waitRun(h.publish("leads.web", "e-1", `{"id":"lead-9","name":"Dee","emails":["dee0@example.com","new1@example.com","new2@example.com","new3@example.com"]}`))
	require.Equal(t, runlog.Succeeded, rec.Status, "%+v", rec)
	require.Equal(t, outcome.Updated, rec.Items[0].Outcome)
	require.Equal(t, existing.ID, rec.Items[0].CustomerID)
	require.Equal(t, []string{"emails: new2@example.com (Kustomer keeps at most 10 per list)", "emails: new3@example.com (Kustomer keeps at most 10 per list)"}, rec.Items[0].Dropped)

	cs := h.sb.Sandbox.Customers()
	require.Len(t, cs, 1)
	got := emailsOf(cs[0].Attributes)
	require.Len(t, got, 10)
	require.Equal(t, "dee8@example.com", got[8], "every email the customer had is kept")
	require.Equal(t, "new1@example.com", got[9])
}

func TestTwoReplicasRacingOnTheSameEmailEndAsOneCustomer(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: matchConfig("update")})
	// A second replica: its own connection and worker, the same NATS and consumer.
	nc2, js2 := h.nats.Connect(t)
	cfg, err := mapping.Parse("test.yaml", []byte(matchConfig("update")))
	require.NoError(t, err)
	w2, err := New(Config{
		Conn: nc2, JetStream: js2, Workflows: cfg.Workflows,
		Kustomer:      kustomer.Config{BaseURL: h.sb.URL, APIKey: testAPIKey, Timeout: 2 * time.Second},
		RatePerMinute: 60000, Logger: zerolog.New(h.logs), ReplicaID: "replica-2", Registerer: h.metrics,
	})
	require.NoError(t, err)
	require.NoError(t, w2.Start(t.Context()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w2.Stop(ctx)
	})

	const people = 12
	var wg sync.WaitGroup
	for i := range people {
		for lead := range 2 {
			wg.Go(func() {
				h.publish("leads.web", fmt.Sprintf("e-%d-%d", i, lead),
					fmt.Sprintf(`{"id":"lead-%d-%d","name":"P%d","emails":["p%d@example.com"]}`, i, lead, i, i))
			})
		}
	}
	wg.Wait()
	h.waitIdle("sync")
	for i := range people {
		require.Len(t, h.customersWithEmail(fmt.Sprintf("p%d@example.com", i)), 1, "person %d\nlogs:\n%s", i, h.logs.String())
	}
	require.Len(t, h.sb.Sandbox.Customers(), people)
	require.Equal(t, people, h.sb.Sandbox.Stats().Updates, "the second lead of each person updated the first's customer")
}

func TestEveryLookUpSpendsTheBudget(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: matchConfig("update")})

	h.waitRun(h.publish("leads.web", "e-1", `{"id":"lead-1","name":"Eve","emails":["eve@example.com"],"phones":["+14155550103"]}`))
	h.waitRun(h.publish("leads.web", "e-2", `{"id":"lead-1","name":"Eve Online","emails":["eve@example.com"]}`))
	st := h.sb.Sandbox.Stats()
	// The first: three look-ups, then a create; the second: found by its externalId, then updated.
	require.Equal(t, 2, st.LookupsByExternalID-1, "the start probe is a look-up by externalId")
	require.Equal(t, 1, st.LookupsByEmail)
	require.Equal(t, 1, st.LookupsByPhone)
	require.Equal(t, 1, st.Creates)
	require.Equal(t, 1, st.Updates)
	require.Equal(t, int64(st.Requests), h.worker.limiter.Granted(), "every request sent was paid for in the limiter")
}

func TestFreshIDsSkipsTheExternalIDLookUpOfAnItemNeverSeen(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: matchConfig("update", "    fresh_ids: true\n")})

	h.waitRun(h.publish("leads.web", "e-1", `{"id":"lead-1","name":"Fay","emails":["fay@example.com"]}`))
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 1, st.LookupsByExternalID, "only the start probe")
	require.Equal(t, 1, st.LookupsByEmail)
	require.Equal(t, int64(st.Requests), h.worker.limiter.Granted())

	// Seen before: its externalId is looked up.
	rec := h.waitRun(h.publish("leads.web", "e-2", `{"id":"lead-1","name":"Fay Wray","emails":["fay@example.com"]}`))
	require.Equal(t, outcome.Updated, rec.Items[0].Outcome)
	require.Equal(t, 2, h.sb.Sandbox.Stats().LookupsByExternalID)
}

// Each event's item has its result, even when it is the same person with
// the same body as another event's: downstream hears of both events.
func TestTwoEventsOfTheSamePersonEachPublishTheirResult(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: strings.Replace(matchConfig("skip"), "name: sync", "name: twice", 1)})
	lead := `{"id":"tw-1","name":"Ada","emails":["ada@example.com"]}`
	first := h.waitRun(h.publish("leads.web", "tw-e1", lead))
	second := h.waitRun(h.publish("leads.web", "tw-e2", lead))
	require.Equal(t, runlog.Succeeded, second.Status)
	require.Equal(t, first.Items[0].CustomerID, second.Items[0].CustomerID)

	st, err := h.js.Stream(context.Background(), result.StreamDefault)
	require.NoError(t, err)
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(mapping.ResultsPrefixDefault+"twice"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Subjects[mapping.ResultsPrefixDefault+"twice"], "one result per event")
}

// kustomerSlowLookUp makes time pass, on the worker's clock, during the
// look-ups by externalId and email (as long waits for the budget would),
// then checks at the create that the item's claim and match locks
// are still alive.
type kustomerSlowLookUp struct {
	Kustomer
	clock   *looptest.FakeClock
	ledger  func() *ledger.Ledger
	js      jetstream.JetStream
	checked atomic.Int32
	expired []string
	mu      sync.Mutex
}

func (k *kustomerSlowLookUp) CustomerByExternalID(ctx context.Context, id string) (*kustomer.Customer, error) {
	if strings.HasPrefix(id, "slow-") {
		k.clock.Advance(20 * time.Second)
	}
	return k.Kustomer.CustomerByExternalID(ctx, id)
}

func (k *kustomerSlowLookUp) CustomerByEmail(ctx context.Context, email string) (*kustomer.Customer, error) {
	k.clock.Advance(20 * time.Second) // 40 s since the claim: past its 30 s lease
	return k.Kustomer.CustomerByEmail(ctx, email)
}

func (k *kustomerSlowLookUp) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	kv, err := k.js.KeyValue(ctx, ledger.BucketDefault)
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		left, ok := k.ledger().LeaseLeft(ctx, e.Value())
		if !ok {
			continue
		}
		k.checked.Add(1)
		if left <= 0 {
			k.mu.Lock()
			k.expired = append(k.expired, key)
			k.mu.Unlock()
		}
	}
	return k.Kustomer.CreateCustomer(ctx, body)
}

// An attempt whose claim and match locks are older than a third of their
// lease when it is about to create (its look-ups, or the budget, took long)
// renews them first: no other replica can take them over as expired while
// the create is under way.
func TestAClaimAndMatchLocksHeldThroughALongWaitAreRenewedBeforeTheCreate(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	var h *harness
	k := &kustomerSlowLookUp{clock: clock, ledger: func() *ledger.Ledger { return h.worker.ledger }}
	h = setup(t, harnessOptions{
		config:  matchConfig("skip"),
		sandbox: sandbox.Config{RatePerMinute: -1},
		wrap:    func(c Kustomer) Kustomer { k.Kustomer = c; return k },
		worker:  func(c *Config) { c.Clock = clock },
		before:  func(h *harness) { k.js = h.js },
	})
	rec := h.waitRun(h.publish("leads.web", "slow-1", `{"id":"slow-1","name":"Ada","emails":["ada@example.com"]}`))
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, outcome.Created, rec.Items[0].Outcome)
	require.GreaterOrEqual(t, k.checked.Load(), int32(2), "the claim and the email's lock were looked at")
	require.Empty(t, k.expired, "claims or locks expired at the create")
}
