package sandbox_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
)

// submitBulk posts a bulk body, requires a 201 and returns the job's data.
func submitBulk(t *testing.T, sb *sandbox.Sandbox, body string) map[string]any {
	t.Helper()
	rec := call(t, sb, http.MethodPost, "/v1/customers/bulk", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	return decode(t, rec)["data"].(map[string]any)
}

// pollBulk returns the attributes of GET /v1/bulk/{id}.
func pollBulk(t *testing.T, sb *sandbox.Sandbox, id string) map[string]any {
	t.Helper()
	rec := call(t, sb, http.MethodGet, "/v1/bulk/"+id, "")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	data := decode(t, rec)["data"].(map[string]any)
	require.Equal(t, id, data["id"])
	return data["attributes"].(map[string]any)
}

// batchOf returns the attributes of the only batch of GET /v1/bulk/{id}/batches.
func batchOf(t *testing.T, sb *sandbox.Sandbox, id string) map[string]any {
	t.Helper()
	rec := call(t, sb, http.MethodGet, "/v1/bulk/"+id+"/batches", "")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	batches := decode(t, rec)["data"].([]any)
	require.Len(t, batches, 1)
	return batches[0].(map[string]any)["attributes"].(map[string]any)
}

func TestBulkJobIsQueuedThenRunningThenCompleteOnTheSandboxClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, BulkDelay: 10 * time.Second})

	job := submitBulk(t, sb, `[{"name":"a","externalId":"a","_clientRef":"r1"},{"name":"b","_clientRef":"r2"}]`)
	require.Equal(t, "bulk", job["type"])
	id := job["id"].(string)
	require.Regexp(t, `^[0-9a-f]{24}$`, id)
	require.Equal(t, "/v1/bulk/"+id, job["links"].(map[string]any)["self"])
	attrs := job["attributes"].(map[string]any)
	require.Equal(t, "queued", attrs["status"])
	require.Equal(t, false, attrs["completed"])
	require.Empty(t, sb.Customers(), "nothing is created before the job runs")

	clock.Advance(4 * time.Second)
	require.Equal(t, "queued", pollBulk(t, sb, id)["status"])
	clock.Advance(time.Second)
	require.Equal(t, "running", pollBulk(t, sb, id)["status"])
	batch := batchOf(t, sb, id)
	require.Equal(t, "running", batch["status"])
	require.Empty(t, batch["results"], "no results before the job completes")
	require.Empty(t, sb.Customers())

	clock.Advance(5 * time.Second)
	attrs = pollBulk(t, sb, id)
	require.Equal(t, "complete", attrs["status"])
	require.Equal(t, true, attrs["completed"])
	custs := sb.Customers()
	require.Len(t, custs, 2)
	require.Equal(t, []any{custs[0].ID, custs[1].ID}, attrs["ids"])
	require.Equal(t, start.Add(10*time.Second), custs[0].CreatedAt, "created when the job completed")
	require.NotContains(t, custs[0].Attributes, "_clientRef")

	batch = batchOf(t, sb, id)
	require.Equal(t, []any{custs[0].ID, custs[1].ID}, batch["objectIds"])
	require.EqualValues(t, 2, batch["successCount"])
	require.EqualValues(t, 0, batch["failureCount"])
	require.Equal(t, []any{
		map[string]any{"_clientRef": "r1", "objectId": custs[0].ID, "status": "created"},
		map[string]any{"_clientRef": "r2", "objectId": custs[1].ID, "status": "created"},
	}, batch["results"])

	rec := call(t, sb, http.MethodGet, "/v1/bulk/0123456789abcdef01234567", "")
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Equal(t, "notfound", firstError(t, rec)["code"])
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodGet, "/v1/bulk/"+id+"/other", "").Code)

	st := sb.Stats()
	require.Equal(t, 1, st.BulkJobs)
	require.Equal(t, 7, st.BulkPolls)
	require.Equal(t, 2, st.Creates)
}

func TestBulkWithZeroDelayCompletesAtTheNextRequest(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	job := submitBulk(t, sb, `[{"externalId":"x"}]`)
	require.Equal(t, "queued", job["attributes"].(map[string]any)["status"], "the submission always answers a queued job")
	require.Equal(t, "complete", pollBulk(t, sb, job["id"].(string))["status"])
	require.Equal(t, map[string]int{"x": 1}, sb.CountByExternalID())
}

func TestBulkInvalidItemFailsAloneWithTheErrorASingleCreateWouldGet(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	job := submitBulk(t, sb, `[{"name":"ok","_clientRef":"r1"},{"emails":[{"email":"bad"}],"_clientRef":"r2"},{"name":"also ok","_clientRef":"r3"}]`)
	batch := batchOf(t, sb, job["id"].(string))
	require.EqualValues(t, 2, batch["successCount"])
	require.EqualValues(t, 1, batch["failureCount"])
	results := batch["results"].([]any)
	require.Len(t, results, 3)
	failed := results[1].(map[string]any)
	require.Equal(t, "r2", failed["_clientRef"])
	require.Equal(t, "failed", failed["status"])
	require.EqualValues(t, http.StatusBadRequest, failed["statusCode"])
	e := failed["errors"].([]any)[0].(map[string]any)
	require.Equal(t, "badparam", e["code"])
	require.EqualValues(t, 400, e["status"])
	require.Equal(t, "/emails/0/email", e["source"].(map[string]any)["pointer"], "the pointer is the item's own")

	single := firstError(t, call(t, sb, http.MethodPost, "/v1/customers", `{"emails":[{"email":"bad"}]}`))
	require.Equal(t, single["title"], e["title"])
	require.Equal(t, single["detail"], e["detail"])

	require.Len(t, sb.Customers(), 2)
	require.Equal(t, 1, sb.Stats().BulkItemsFailed)
	require.Equal(t, 1, sb.Stats().BadRequests, "only the single create was a 400")
}

func TestBulkRejectsWholeWhatCannotBeMatchedBack(t *testing.T) {
	t.Parallel()
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"name":"x"},`, 101), ",") + "]"
	cases := map[string]struct{ body, pointer string }{
		"bad JSON":            {`[{"name":`, ""},
		"more than 100":       {many, ""},
		"empty":               {`[]`, ""},
		"not an array":        {`{"name":"x"}`, ""},
		"item not an object":  {`[{"name":"a"},"b"]`, "/1"},
		"mixed _clientRef":    {`[{"name":"a","_clientRef":"r1"},{"name":"b"}]`, ""},
		"repeated _clientRef": {`[{"_clientRef":"r1"},{"_clientRef":"r1"}]`, "/1/_clientRef"},
		"empty _clientRef":    {`[{"_clientRef":""}]`, "/0/_clientRef"},
		"numeric _clientRef":  {`[{"_clientRef":7}]`, "/0/_clientRef"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sb := newSandbox(t, sandbox.Config{})
			rec := call(t, sb, http.MethodPost, "/v1/customers/bulk", tc.body)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			e := firstError(t, rec)
			require.Equal(t, "badparam", e["code"])
			if tc.pointer != "" {
				require.Equal(t, tc.pointer, e["source"].(map[string]any)["pointer"])
			}
			require.Empty(t, sb.Customers())
			require.Zero(t, sb.Stats().BulkJobs)
		})
	}
}

func TestBulkRejectInvalidRejectsWholeRequestWithItemPointer(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{BulkRejectInvalid: true})
	rec := call(t, sb, http.MethodPost, "/v1/customers/bulk", `[{"name":"ok"},{"phones":[{"phone":"555"}]}]`)
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Equal(t, "/1/phones/0/phone", firstError(t, rec)["source"].(map[string]any)["pointer"])
	require.Empty(t, sb.Customers())
	require.Zero(t, sb.Stats().BulkJobs)
}

func TestBulkWithoutClientRefsReportsResultsInSubmissionOrder(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	job := submitBulk(t, sb, `[{"name":"a"},{"tags":"not an array"},{"name":"c"}]`)
	results := batchOf(t, sb, job["id"].(string))["results"].([]any)
	require.Len(t, results, 3)
	custs := sb.Customers()
	require.Equal(t, map[string]any{"objectId": custs[0].ID, "status": "created"}, results[0])
	require.Equal(t, "failed", results[1].(map[string]any)["status"])
	require.NotContains(t, results[1], "_clientRef")
	require.Equal(t, custs[1].ID, results[2].(map[string]any)["objectId"])
}

func TestBulkFaultsFailItemsStickJobsAndRejectSubmissions(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, RatePerMinute: 100, BulkItemFailureRate: 1})

	job := submitBulk(t, sb, `[{"name":"a","_clientRef":"r1"},{"name":"b","_clientRef":"r2"}]`)
	clock.Advance(time.Millisecond)
	batch := batchOf(t, sb, job["id"].(string))
	require.EqualValues(t, 2, batch["failureCount"])
	res := batch["results"].([]any)[0].(map[string]any)
	require.EqualValues(t, http.StatusServiceUnavailable, res["statusCode"])
	require.Equal(t, "serviceUnavailable", res["errors"].([]any)[0].(map[string]any)["code"])
	require.Empty(t, sb.Customers())

	sb.SetFaults(sandbox.Faults{BulkStuckRate: 1, BulkDelay: time.Second})
	stuck := submitBulk(t, sb, `[{"name":"never"}]`)
	clock.Advance(24 * time.Hour)
	require.Equal(t, "running", pollBulk(t, sb, stuck["id"].(string))["status"])
	require.Empty(t, sb.Customers())

	sb.SetFaults(sandbox.Faults{BulkSubmitErrorRate: 1})
	rec := call(t, sb, http.MethodPost, "/v1/customers/bulk", `[{"name":"x"}]`)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, "serviceUnavailable", firstError(t, rec)["code"])
	require.Equal(t, "98", rec.Header().Get("X-Ratelimit-Remaining"), "this window: the poll, and the failed submission spends its unit")

	st := sb.Stats()
	require.Equal(t, 2, st.BulkJobs)
	require.Equal(t, 1, st.BulkStuck)
	require.Equal(t, 2, st.BulkItemsFailed)
	require.Equal(t, 1, st.ServerErrors)
}

func TestBulkRequestsAndPollsEachSpendOneUnitAndAre429PastTheBudget(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{RatePerMinute: 3, BulkDelay: time.Hour})
	job := submitBulk(t, sb, `[{"name":"a"},{"name":"b"},{"name":"c"}]`)
	id := job["id"].(string)
	require.Equal(t, http.StatusOK, call(t, sb, http.MethodGet, "/v1/bulk/"+id, "").Code)
	rec := call(t, sb, http.MethodGet, "/v1/bulk/"+id+"/batches", "")
	require.Equal(t, "0", rec.Header().Get("X-Ratelimit-Remaining"))
	rec = call(t, sb, http.MethodGet, "/v1/bulk/"+id, "")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.Equal(t, 1, sb.Stats().RateLimited)
}

func TestBulkItemsWithAnExistingExternalIDAreCreatedAndCountedAsDuplicates(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{})
	require.Equal(t, http.StatusCreated, call(t, sb, http.MethodPost, "/v1/customers", `{"externalId":"a"}`).Code)
	submitBulk(t, sb, `[{"externalId":"a"},{"externalId":"b"},{"externalId":"b"}]`)
	require.Equal(t, map[string]int{"a": 2, "b": 2}, sb.CountByExternalID())
	require.Equal(t, 2, sb.Stats().Duplicates)
}

func TestBulkTimeoutRateQueuesTheJobAndWithholdsTheAnswer(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{TimeoutRate: 1})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *httptest.ResponseRecorder)
	go func() {
		done <- callCtx(t, ctx, sb, http.MethodPost, "/v1/customers/bulk", `[{"externalId":"lead-1"}]`)
	}()
	require.Eventually(t, func() bool { return sb.Stats().Timeouts == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1, sb.Stats().BulkJobs)
	cancel()
	require.Empty(t, (<-done).Body.String())
	require.Eventually(t, func() bool { return sb.CountByExternalID()["lead-1"] == 1 }, 5*time.Second, time.Millisecond,
		"the job runs although its answer was lost")
}

func TestBulkJobsUpdatesAndLookUpsAreSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{RatePerMinute: -1, BulkDelay: time.Millisecond})
	const workers, rounds = 4, 10
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				ext := fmt.Sprintf("w%d-%d", w, i)
				job := submitBulk(t, sb, `[{"externalId":"`+ext+`","emails":[{"email":"`+ext+`@example.com"}]},{"name":"second"}]`)
				call(t, sb, http.MethodGet, "/v1/bulk/"+job["id"].(string)+"/batches", "")
				if id := lookupID(t, sb, "/v1/customers/externalId="+ext); id != "" {
					call(t, sb, http.MethodPut, "/v1/customers/"+id+"?replace=false", `{"name":"updated"}`)
				}
				lookupID(t, sb, "/v1/customers/email="+ext+"%40example.com")
				_ = sb.Stats()
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return sb.Stats().Creates == 2*workers*rounds }, 5*time.Second, time.Millisecond)
	require.Len(t, sb.Customers(), 2*workers*rounds)
	require.Len(t, sb.CountByExternalID(), workers*rounds)
	require.Zero(t, sb.Stats().Duplicates)
}

func TestBulkSerialJobsRunOneAfterAnother(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, BulkDelay: 10 * time.Second, BulkTiming: sandbox.BulkSerial})
	a := submitBulk(t, sb, `[{"externalId":"a"}]`)["id"].(string)
	b := submitBulk(t, sb, `[{"externalId":"b"}]`)["id"].(string)
	clock.Advance(time.Second)
	require.Equal(t, "running", pollBulk(t, sb, a)["status"])
	require.Equal(t, "queued", pollBulk(t, sb, b)["status"], "waits for the job before it")
	clock.Advance(9 * time.Second)
	require.Equal(t, "complete", pollBulk(t, sb, a)["status"])
	require.Equal(t, "running", pollBulk(t, sb, b)["status"])
	clock.Advance(9 * time.Second)
	require.Equal(t, map[string]int{"a": 1}, sb.CountByExternalID())
	clock.Advance(time.Second)
	require.Equal(t, map[string]int{"a": 1, "b": 1}, sb.CountByExternalID(), "the second completes a BulkDelay after the first")
}

func TestBulkSpreadJobsTakeDurationsAcrossTheRange(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)
	clock := looptest.NewFakeClock(start)
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, BulkTiming: sandbox.BulkSpread, BulkDelayMin: 2 * time.Second, BulkDelay: 6 * time.Second})
	const jobs = 200
	for i := range jobs {
		submitBulk(t, sb, fmt.Sprintf(`[{"externalId":"s%d"}]`, i))
	}
	var done []int
	for range 6 {
		clock.Advance(time.Second)
		done = append(done, len(sb.CountByExternalID()))
	}
	require.Equal(t, 0, done[0], "none before 2 s")
	require.Greater(t, done[2], done[1], "some complete between 2 and 3 s")
	require.Less(t, done[3], jobs, "some take longer than 4 s")
	require.Equal(t, jobs, done[5], "all within 6 s")
}

// Jobs complete on their own schedule, polled or not: a look-up by
// externalId then finds the customer.
func TestBulkJobsCompleteUnpolledAndLookUpsFindTheirCustomers(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, BulkDelay: 30 * time.Second})
	submitBulk(t, sb, `[{"externalId":"unpolled"}]`)
	clock.Advance(29 * time.Second)
	require.Equal(t, http.StatusNotFound, call(t, sb, http.MethodGet, "/v1/customers/externalId=unpolled", "").Code, "still running")
	clock.Advance(time.Second)
	require.Equal(t, http.StatusOK, call(t, sb, http.MethodGet, "/v1/customers/externalId=unpolled", "").Code)
	require.Zero(t, sb.Stats().BulkPolls)
}

func TestBulkBatchesWithoutStatusAndEmptyUntilDone(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC))
	sb := newSandbox(t, sandbox.Config{Now: clock.Now, BulkDelay: 2 * time.Second, BulkBatchesNoStatus: true})
	id := submitBulk(t, sb, `[{"externalId":"n1","_clientRef":"r"}]`)["id"].(string)
	batch := batchOf(t, sb, id)
	require.NotContains(t, batch, "status")
	require.NotContains(t, batch, "completed")
	require.EqualValues(t, 0, batch["successCount"])
	clock.Advance(2 * time.Second)
	batch = batchOf(t, sb, id)
	require.NotContains(t, batch, "status")
	require.EqualValues(t, 1, batch["successCount"])
	require.Equal(t, "complete", pollBulk(t, sb, id)["status"], "the job itself still reports its status")

	sb.SetFaults(func() sandbox.Faults { f := sb.Faults(); f.BulkBatchesEmptyUntilDone = true; return f }())
	id = submitBulk(t, sb, `[{"externalId":"n2","_clientRef":"r"}]`)["id"].(string)
	rec := call(t, sb, http.MethodGet, "/v1/bulk/"+id+"/batches", "")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, []any{}, decode(t, rec)["data"], "an empty list until the job is done")
	clock.Advance(2 * time.Second)
	require.EqualValues(t, 1, batchOf(t, sb, id)["successCount"])
}

func TestBulkLostAndLateAnswersStillRunTheJob(t *testing.T) {
	t.Parallel()
	sb := newSandbox(t, sandbox.Config{BulkSubmitLostRate: 1})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- callCtx(t, ctx, sb, http.MethodPost, "/v1/customers/bulk", `[{"externalId":"lost"}]`) }()
	require.Eventually(t, func() bool { return sb.Stats().BulkLost == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.Empty(t, (<-done).Body.String(), "the answer is lost")
	require.Equal(t, map[string]int{"lost": 1}, sb.CountByExternalID(), "the job ran")

	late := newSandbox(t, sandbox.Config{BulkSubmitLate: 50 * time.Millisecond})
	rec := call(t, late, http.MethodPost, "/v1/customers/bulk", `[{"externalId":"late"}]`)
	require.Equal(t, http.StatusCreated, rec.Code)
	require.Equal(t, 1, late.Stats().BulkJobs)
}

func TestBulkJobModelsSetTheirSettingsAndRejectUnknownNames(t *testing.T) {
	t.Parallel()
	for _, name := range sandbox.JobModels {
		cfg := sandbox.Config{BulkDelay: 6 * time.Second, RatePerMinute: 7}
		require.NoError(t, cfg.SetJobModel(name), name)
		require.Equal(t, 6*time.Second, cfg.BulkDelay)
		require.Equal(t, 7, cfg.RatePerMinute)
		_, err := sandbox.New(cfg)
		require.NoError(t, err, name)
	}
	cfg := sandbox.Config{BulkDelay: 6 * time.Second}
	require.NoError(t, cfg.SetJobModel(sandbox.JobModelSpread))
	require.Equal(t, 2*time.Second, cfg.BulkDelayMin)
	require.ErrorContains(t, cfg.SetJobModel("fast"), `job model "fast": want one of parallel, serial`)
	_, err := sandbox.New(sandbox.Config{BulkTiming: "sometimes"})
	require.ErrorContains(t, err, `BulkTiming "sometimes"`)
}
