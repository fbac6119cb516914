package kustomer_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

func refsOf(items []kustomer.BulkItem) []string {
	refs := make([]string, len(items))
	for i, it := range items {
		refs[i] = it.Ref
	}
	return refs
}

func TestBulkJobIsFollowedToCompletionAndEachItemMatchedByItsRef(t *testing.T) {
	t.Parallel()
	clk := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
	srv := kustomertest.New(t, sandbox.Config{Now: clk.Now, BulkDelay: 2 * time.Second})
	c := srv.Client(t, kustomer.Config{})
	items := []kustomer.BulkItem{
		{Ref: "lead-a", Body: map[string]any{"name": "a", "externalId": "bulk-a"}},
		{Ref: "lead-b", Body: []byte(`{"emails":[{"email":"not an email"}]}`)},
		{Ref: "lead-c", Body: json.RawMessage(`{"name":"c","externalId":"bulk-c"}`)},
	}
	job, err := c.CreateCustomersBulk(t.Context(), items)
	require.NoError(t, err)
	require.Regexp(t, `^[0-9a-f]{24}$`, job.ID)
	require.Equal(t, "queued", job.Status)
	require.False(t, job.Done())

	early, err := c.BulkResults(t.Context(), job.ID)
	require.NoError(t, err)
	require.False(t, early.Completed)
	for _, o := range early.Outcomes(refsOf(items)) {
		var ke *kustomer.Error
		require.ErrorAs(t, o.Err, &ke)
		require.Equal(t, kustomer.ClassRetryable, ke.Class)
		require.True(t, ke.Timeout, "outcome unknown while the job runs")
	}

	clk.Advance(2 * time.Second)
	polled, err := c.BulkJob(t.Context(), job.ID)
	require.NoError(t, err)
	require.True(t, polled.Done())
	require.Equal(t, "complete", polled.Status)
	require.Len(t, polled.IDs, 2)

	res, err := c.BulkResults(t.Context(), job.ID)
	require.NoError(t, err)
	require.True(t, res.Completed)
	require.Equal(t, 2, res.SuccessCount)
	require.Equal(t, 1, res.FailureCount)
	out := res.Outcomes(refsOf(items))
	require.Len(t, out, 3)
	require.NoError(t, out[0].Err)
	require.Equal(t, "lead-a", out[0].Ref)
	require.Equal(t, polled.IDs[0], out[0].CustomerID)
	require.Equal(t, polled.IDs[1], out[2].CustomerID)

	var ke *kustomer.Error
	require.ErrorAs(t, out[1].Err, &ke)
	require.Equal(t, kustomer.ClassPermanent, ke.Class)
	require.Equal(t, http.StatusBadRequest, ke.StatusCode)
	require.Equal(t, "badparam", ke.Code)
	require.Equal(t, "/emails/0/email", ke.Pointer)
	require.Empty(t, out[1].CustomerID)

	_, err = c.CreateCustomer(t.Context(), items[1].Body)
	single := asError(t, err)
	single.Op = "bulk"
	require.Equal(t, single, ke, "an item fails as its single create would")

	found, err := c.CustomerByExternalID(t.Context(), "bulk-c")
	require.NoError(t, err)
	require.Equal(t, out[2].CustomerID, found.ID)
	require.Equal(t, 6, srv.Sandbox.Stats().Requests, "submit, 3 reads of the job, a single create, a look-up")
}

func TestBulkItemsWithoutRefsAreMatchedByPosition(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	items := []kustomer.BulkItem{{Body: map[string]any{"externalId": "p-1"}}, {Body: map[string]any{"tags": 1}}, {Body: map[string]any{"externalId": "p-3"}}}
	job, err := c.CreateCustomersBulk(t.Context(), items)
	require.NoError(t, err)
	res, err := c.BulkResults(t.Context(), job.ID)
	require.NoError(t, err)
	out := res.Outcomes(make([]string, len(items)))
	require.NoError(t, out[0].Err)
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(out[1].Err))
	found, err := c.CustomerByExternalID(t.Context(), "p-3")
	require.NoError(t, err)
	require.Equal(t, found.ID, out[2].CustomerID)
}

// Some of a job's items, asked about later and perhaps in another order,
// are matched only through their refs: results that carry none leave each
// item's outcome unknown rather than pair it with another item's result.
func TestBulkOutcomesByRefNeverMatchByPosition(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	items := []kustomer.BulkItem{{Body: map[string]any{"externalId": "q-1"}}, {Body: map[string]any{"externalId": "q-2"}}}
	job, err := c.CreateCustomersBulk(t.Context(), items)
	require.NoError(t, err)
	res, err := c.BulkResults(t.Context(), job.ID)
	require.NoError(t, err)
	require.NoError(t, res.Outcomes([]string{"", ""})[1].Err, "the whole list in order: by position")
	for i, o := range res.OutcomesByRef([]string{"b", "a"}) {
		var ke *kustomer.Error
		require.ErrorAs(t, o.Err, &ke, "item %d", i)
		require.True(t, ke.Timeout, "item %d: outcome unknown", i)
		require.Empty(t, o.CustomerID, "item %d", i)
	}
}

func TestBulkItemFailuresInjectedBySandboxAreRetryable(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{BulkItemFailureRate: 1})
	c := srv.Client(t, kustomer.Config{})
	job, err := c.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{{Ref: "r", Body: map[string]any{"name": "x"}}})
	require.NoError(t, err)
	res, err := c.BulkResults(t.Context(), job.ID)
	require.NoError(t, err)
	o := res.Outcomes([]string{"r"})[0]
	var ke *kustomer.Error
	require.ErrorAs(t, o.Err, &ke)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.Equal(t, http.StatusServiceUnavailable, ke.StatusCode)
	require.False(t, ke.Timeout, "Kustomer said it failed: nothing was created")
}

func TestBulkSendsRefsAsClientRefInsideEachItem(t *testing.T) {
	t.Parallel()
	var got []byte
	f := setup(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"data":{"type":"bulk","id":"b1","attributes":{"status":"queued"}}}`)
	})
	job, err := f.client.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{
		{Ref: `r"1`, Body: map[string]any{"name": "a"}},
		{Ref: "r2", Body: []byte(" {} ")},
		{Ref: "r3", Body: json.RawMessage("{ \"name\" : \"c\" }")},
	})
	require.NoError(t, err)
	require.Equal(t, "b1", job.ID)
	require.False(t, job.Done(), "a 202 with a queued job is a running job")
	require.JSONEq(t, `[{"_clientRef":"r\"1","name":"a"},{"_clientRef":"r2"},{"_clientRef":"r3","name":"c"}]`, string(got))
}

func TestBulkCreateRejectsBadBatchesWithoutRequest(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{})
	c := srv.Client(t, kustomer.Config{})
	body := map[string]any{"name": "x"}
	long := make([]byte, kustomer.ClientRefMax+1)
	for i := range long {
		long[i] = 'r'
	}
	for name, items := range map[string][]kustomer.BulkItem{
		"none":          nil,
		"too many":      make([]kustomer.BulkItem, kustomer.BulkMax+1),
		"mixed refs":    {{Ref: "a", Body: body}, {Body: body}},
		"repeated refs": {{Ref: "a", Body: body}, {Ref: "a", Body: body}},
		"long ref":      {{Ref: string(long), Body: body}},
		"not an object": {{Body: []any{"x"}}},
		"nil body":      {{Body: nil}},
	} {
		_, err := c.CreateCustomersBulk(t.Context(), items)
		require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err), name)
	}
	require.Zero(t, srv.Sandbox.Stats().Requests)
}

func TestBulkRejectedWholeForOneInvalidItemNamesThatItem(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{BulkRejectInvalid: true})
	c := srv.Client(t, kustomer.Config{})
	_, err := c.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{
		{Body: map[string]any{"name": "ok"}},
		{Body: map[string]any{"phones": []any{map[string]any{"phone": "555"}}}},
	})
	ke := asError(t, err)
	require.Equal(t, http.StatusBadRequest, ke.StatusCode)
	require.Equal(t, kustomer.ClassPermanent, ke.Class)
	require.Equal(t, "/1/phones/0/phone", ke.Pointer)
	i, ok := kustomer.BulkRejectedItem(err)
	require.True(t, ok)
	require.Equal(t, 1, i)

	_, ok = kustomer.BulkRejectedItem(&kustomer.Error{Op: "bulk", Class: kustomer.ClassPermanent, Pointer: "/_clientRef"})
	require.False(t, ok)
	_, ok = kustomer.BulkRejectedItem(&kustomer.Error{Op: "create", Class: kustomer.ClassPermanent, Pointer: "/1/name"})
	require.False(t, ok)
}

func TestBulkResultsParseBothErrorShapesAndUnknownFields(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusOK, `{"data":[
		{"type":"bulk_batch","attributes":{"status":"complete","successCount":2,"failureCount":4,"extra":{"x":1},"results":[
			{"_clientRef":"ok","objectId":"c1","status":"created","note":"unknown field"},
			{"_clientRef":"simple429","status":"failed","statusCode":429,"error":{"code":"rateLimited","message":"slow down"}},
			{"_clientRef":"api400","status":"failed","errors":[{"status":400,"code":"badparam","title":"Invalid email","source":{"pointer":"/emails/0/email"}}]},
			{"_clientRef":"str503","errors":[{"status":"503","code":"serviceUnavailable"}]}
		]}},
		{"type":"bulk_batch","attributes":{"status":"completed","results":[
			{"_clientRef":"auth","status":403,"errors":[{"code":"forbidden","message":"role missing","meta":{"subErrors":[{"title":"needs customer.create"}]}}]},
			{"_clientRef":"bare","status":"failed"},
			{"_clientRef":"idonly","id":"c2"}
		]}}]}`))
	res, err := f.client.BulkResults(t.Context(), "b1")
	require.NoError(t, err)
	require.True(t, res.Completed)
	require.Equal(t, 2, res.SuccessCount)
	require.Equal(t, 4, res.FailureCount)
	out := res.Outcomes([]string{"idonly", "simple429", "api400", "str503", "auth", "bare", "ok", "absent"})
	require.Equal(t, "c2", out[0].CustomerID)
	require.NoError(t, out[0].Err)
	require.Equal(t, "c1", out[6].CustomerID)

	classes := map[string]kustomer.Class{}
	for _, o := range out[1:6] {
		classes[o.Ref] = kustomer.ClassOf(o.Err)
	}
	require.Equal(t, map[string]kustomer.Class{
		"simple429": kustomer.ClassRetryable, "api400": kustomer.ClassPermanent, "str503": kustomer.ClassRetryable,
		"auth": kustomer.ClassSystemic, "bare": kustomer.ClassPermanent,
	}, classes)
	require.EqualError(t, out[1].Err, "kustomer: bulk: 429 rateLimited: slow down")
	require.EqualError(t, out[2].Err, "kustomer: bulk: 400 badparam: Invalid email (/emails/0/email)")
	require.Contains(t, out[4].Err.Error(), "needs customer.create")

	var ke *kustomer.Error
	require.ErrorAs(t, out[7].Err, &ke)
	require.True(t, ke.Timeout, "an item Kustomer did not report on has an unknown outcome")
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
}

func TestBulkResultsWithOnlyObjectIDsMatchByPosition(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusOK, `{"data":{"attributes":{"completed":true,"objectIds":["c1","c2"],"failureCount":0}}}`))
	res, err := f.client.BulkResults(t.Context(), "b1")
	require.NoError(t, err)
	out := res.Outcomes([]string{"", ""})
	require.Equal(t, "c1", out[0].CustomerID)
	require.Equal(t, "c2", out[1].CustomerID)
	require.NoError(t, out[1].Err)
}

func TestBulkJobParsesUnknownShapesLeniently(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusOK, `{"data":{"type":"bulk","id":"b1","attributes":{"status":"running","progress":{"done":3}}}}`))
	job, err := f.client.BulkJob(t.Context(), "b1")
	require.NoError(t, err)
	require.Equal(t, "running", job.Status)
	require.False(t, job.Done())
	require.Empty(t, job.IDs)
	require.Contains(t, job.Attributes, "progress")
}

func TestBulkJobThatNeverCompletesStaysRunning(t *testing.T) {
	t.Parallel()
	clk := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
	srv := kustomertest.New(t, sandbox.Config{Now: clk.Now, BulkStuckRate: 1, BulkDelay: time.Second})
	c := srv.Client(t, kustomer.Config{})
	job, err := c.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{{Body: map[string]any{"externalId": "stuck"}}})
	require.NoError(t, err)
	clk.Advance(time.Hour)
	polled, err := c.BulkJob(t.Context(), job.ID)
	require.NoError(t, err)
	require.Equal(t, "running", polled.Status)
	require.False(t, polled.Done())
	_, err = c.CustomerByExternalID(t.Context(), "stuck")
	require.True(t, kustomer.IsNotFound(err))
}

func TestBulkSubmitErrorIsRetryable(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{BulkSubmitErrorRate: 1})
	c := srv.Client(t, kustomer.Config{})
	_, err := c.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{{Body: map[string]any{"name": "x"}}})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.Equal(t, http.StatusServiceUnavailable, ke.StatusCode)
	require.Zero(t, srv.Sandbox.Stats().BulkJobs)
}

// The API lists objectIds, successCount, failureCount, errors and results[]
// for the batches, no status: a job is complete once the counts cover every
// item submitted; an empty list of batches is "not done yet".
func TestBulkResultsCompleteFromCountsWhenBatchesCarryNoStatus(t *testing.T) {
	t.Parallel()
	for _, empty := range []bool{false, true} {
		clk := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
		srv := kustomertest.New(t, sandbox.Config{Now: clk.Now, BulkDelay: 4 * time.Second,
			BulkBatchesNoStatus: true, BulkBatchesEmptyUntilDone: empty})
		c := srv.Client(t, kustomer.Config{})
		items := []kustomer.BulkItem{
			{Ref: "a", Body: map[string]any{"name": "a", "externalId": "nostatus-a"}},
			{Ref: "b", Body: []byte(`{"emails":[{"email":"not an email"}]}`)},
		}
		job, err := c.CreateCustomersBulk(t.Context(), items)
		require.NoError(t, err)
		clk.Advance(3 * time.Second)
		res, err := c.BulkResults(t.Context(), job.ID)
		require.NoError(t, err)
		require.False(t, res.CompleteFor(len(items)), "running (empty list %v)", empty)
		require.Empty(t, res.Status)

		clk.Advance(time.Second)
		res, err = c.BulkResults(t.Context(), job.ID)
		require.NoError(t, err)
		require.Empty(t, res.Status, "no status in the batches")
		require.True(t, res.CompleteFor(len(items)), "one created, one failed: the counts cover both items")
		outs := res.Outcomes(refsOf(items))
		require.NoError(t, outs[0].Err)
		require.NotEmpty(t, outs[0].CustomerID)
		var ke *kustomer.Error
		require.ErrorAs(t, outs[1].Err, &ke)
		require.False(t, ke.Timeout, "the job reported the item's failure")
		again, err := c.BulkResults(t.Context(), job.ID)
		require.NoError(t, err)
		require.False(t, again.CompleteFor(3), "counts that do not cover a third item are not complete")
	}
}
