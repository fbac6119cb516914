package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func newTestRunLog(t *testing.T, cfg RunLogConfig) (*RunLog, jetstream.JetStream) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	l, err := NewRunLog(context.Background(), js, cfg)
	require.NoError(t, err)
	return l, js
}

func testRun(id, workflow string, status RunStatus, started time.Time) RunRecord {
	return RunRecord{
		ID: id, Workflow: workflow, EventID: "evt-" + id, Subject: "leads." + workflow, StreamSeq: 7,
		Started: started, Ended: started.Add(time.Second), Status: status,
		Items: []RunItem{{Index: 0, Outcome: outcome.Created, CustomerID: "5f2d0b0b0b0b0b0b0b0b0b0b", Attempts: 1}},
	}
}

func TestRunRecordRoundTripsThroughTheRunLog(t *testing.T) {
	t.Parallel()
	l, js := newTestRunLog(t, RunLogConfig{})
	ctx := context.Background()
	started := time.Date(2025, 3, 1, 10, 0, 0, 5, time.UTC)
	want := RunRecord{
		ID: "signup-41-1", Workflow: "signup", EventID: "lead-41", Subject: "leads.signup", StreamSeq: 41,
		Started: started, Ended: started.Add(1500 * time.Millisecond), Status: RunPartial, Replay: true,
		Items: []RunItem{
			{Index: 0, Outcome: outcome.Created, CustomerID: "5f2d0b0b0b0b0b0b0b0b0b0b", Attempts: 1},
			{Index: 1, Outcome: outcome.Exhausted, Attempts: 5, Error: "kustomer: create: 503 unavailable"},
		},
		Error: "1 of 2 items dead-lettered",
	}
	require.NoError(t, l.Write(ctx, want))

	got, err := l.Get(ctx, want.ID)
	require.NoError(t, err)
	require.Equal(t, want, got)

	list, err := l.List(ctx, RunFilter{})
	require.NoError(t, err)
	require.Equal(t, []RunRecord{want}, list)

	// The stored form is snake_case JSON for other tools.
	m, err := js.Stream(ctx, RunLogStreamDefault)
	require.NoError(t, err)
	raw, err := m.GetMsg(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "runs.signup.partial.signup-41-1", raw.Subject)
	require.Equal(t, want.ID, raw.Header.Get("Nats-Msg-Id"))
	for _, key := range []string{`"event_id":"lead-41"`, `"stream_seq":41`, `"customer_id":"5f2d0b0b0b0b0b0b0b0b0b0b"`, `"status":"partial"`} {
		require.Contains(t, string(raw.Data), key)
	}
}

func TestRunItemsKeepTheirWireFormAndRecordsWrittenBeforeTypedOutcomesReadBack(t *testing.T) {
	t.Parallel()
	// Items as the run log has always stored them: the outcome's summary,
	// and for a failure the class beside it.
	old := `[{"index":0,"outcome":"created","customer_id":"c0","attempts":1},` +
		`{"index":1,"outcome":"already_created","customer_id":"c1","attempts":2},` +
		`{"index":2,"outcome":"failed","attempts":1,"class":"validation","error":"mapping: emails[0].email: bad"},` +
		`{"index":3,"outcome":"failed","attempts":5,"class":"exhausted","error":"kustomer: create: 503"},` +
		`{"index":4,"outcome":"failed","attempts":1,"class":"permanent","error":"kustomer: create: 400"},` +
		`{"index":5,"outcome":"failed","attempts":1,"class":"mapping","error":"mapping: x"},` +
		`{"index":6,"outcome":"failed","attempts":1,"class":"invalid_event","error":"worker: not JSON"}]`
	want := []RunItem{
		{Index: 0, Outcome: outcome.Created, CustomerID: "c0", Attempts: 1},
		{Index: 1, Outcome: outcome.AlreadyCreated, CustomerID: "c1", Attempts: 2},
		{Index: 2, Outcome: outcome.Validation, Attempts: 1, Error: "mapping: emails[0].email: bad"},
		{Index: 3, Outcome: outcome.Exhausted, Attempts: 5, Error: "kustomer: create: 503"},
		{Index: 4, Outcome: outcome.Permanent, Attempts: 1, Error: "kustomer: create: 400"},
		{Index: 5, Outcome: outcome.Mapping, Attempts: 1, Error: "mapping: x"},
		{Index: 6, Outcome: outcome.InvalidEvent, Attempts: 1, Error: "worker: not JSON"},
	}
	var got []RunItem
	require.NoError(t, json.Unmarshal([]byte(old), &got))
	require.Equal(t, want, got)

	again, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, old, string(again), "written as before")

	var bad []RunItem
	require.ErrorContains(t, json.Unmarshal([]byte(`[{"index":3,"outcome":"existed"}]`), &bad), "run item 3")

	// Every field of an item survives the trip, whichever is added later.
	var full RunItem
	v := reflect.ValueOf(&full).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name)
		case reflect.Int:
			f.SetInt(int64(i + 1))
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{v.Type().Field(i).Name}))
		default:
			require.Equal(t, reflect.TypeFor[outcome.Outcome](), f.Type(), "a RunItem field of a kind this test cannot fill: %s", v.Type().Field(i).Name)
		}
	}
	full.Outcome = outcome.Exhausted
	data, err := json.Marshal(full)
	require.NoError(t, err)
	var fullBack RunItem
	require.NoError(t, json.Unmarshal(data, &fullBack))
	require.Equal(t, full, fullBack)
	fast, err := encodeRecord(RunRecord{ID: "f", Items: []RunItem{full}})
	require.NoError(t, err)
	var fullRec RunRecord
	require.NoError(t, json.Unmarshal(fast, &fullRec))
	require.Equal(t, []RunItem{full}, fullRec.Items)

	// A whole record: the run log's one-pass encoding is json.Marshal's, and reads back.
	rec := testRun("r1", "signup", RunPartial, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	rec.Items = want
	fast, err = encodeRecord(rec)
	require.NoError(t, err)
	slow, err := json.Marshal(rec)
	require.NoError(t, err)
	require.Equal(t, string(slow), string(fast))
	require.Contains(t, string(fast), `"items":`+old)
	var back RunRecord
	require.NoError(t, json.Unmarshal(fast, &back))
	require.Equal(t, rec, back)
}

func TestRunLogGetFindsIDsThatAreNotSubjectTokensAndReportsUnknownOnes(t *testing.T) {
	t.Parallel()
	l, _ := newTestRunLog(t, RunLogConfig{})
	ctx := context.Background()
	r := testRun("leads.signup:41 #2", "signup", RunSucceeded, time.Now())
	require.NoError(t, l.Write(ctx, r))
	got, err := l.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, r.ID, got.ID)

	_, err = l.Get(ctx, "nope")
	require.ErrorIs(t, err, ErrRunNotFound)
	require.EqualError(t, err, "worker: run log: no run nope in RUNS (expired, or never written)", "one prefix, said once")
}

func TestRunLogListFiltersNewestFirst(t *testing.T) {
	t.Parallel()
	l, _ := newTestRunLog(t, RunLogConfig{Stream: "R", SubjectPrefix: "r"})
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	statuses := []RunStatus{RunSucceeded, RunPartial, RunDeadLettered, RunSucceeded, RunFailed, RunSucceeded}
	for i, st := range statuses {
		wf := "signup"
		if i%2 == 1 {
			wf = "import"
		}
		require.NoError(t, l.Write(ctx, testRun(fmt.Sprint("r", i), wf, st, base.Add(time.Duration(i)*time.Minute))))
	}
	ids := func(f RunFilter) []string {
		t.Helper()
		list, err := l.List(ctx, f)
		require.NoError(t, err)
		out := []string{}
		for _, r := range list {
			out = append(out, r.ID)
		}
		return out
	}
	require.Equal(t, []string{"r5", "r4", "r3", "r2", "r1", "r0"}, ids(RunFilter{}))
	require.Equal(t, []string{"r4", "r2", "r0"}, ids(RunFilter{Workflow: "signup"}))
	require.Equal(t, []string{"r5", "r3", "r0"}, ids(RunFilter{Status: RunSucceeded}))
	require.Equal(t, []string{"r5", "r3"}, ids(RunFilter{Workflow: "import", Status: RunSucceeded}))
	require.Equal(t, []string{"r5", "r4"}, ids(RunFilter{Limit: 2}))
	require.Equal(t, []string{"r5"}, ids(RunFilter{Status: RunSucceeded, Limit: 1}))
	require.Equal(t, []string{"r5", "r4", "r3"}, ids(RunFilter{Since: base.Add(3 * time.Minute)}))
	require.Equal(t, []string{"r5", "r4"}, ids(RunFilter{Since: base.Add(3 * time.Minute), Limit: 2}))
	require.Equal(t, []string{}, ids(RunFilter{Workflow: "other"}))

	_, err := l.List(ctx, RunFilter{Status: "meh"})
	require.Error(t, err)
}

func TestRunLogListWithALimitReadsBackPastSparseMatches(t *testing.T) {
	t.Parallel()
	l, _ := newTestRunLog(t, RunLogConfig{})
	ctx := context.Background()
	now := time.Now()
	// One rare run, then many others: the first window misses it.
	require.NoError(t, l.Write(ctx, testRun("rare", "rare", RunFailed, now)))
	for i := range 300 {
		require.NoError(t, l.Write(ctx, testRun(fmt.Sprint("c", i), "common", RunSucceeded, now)))
	}
	list, err := l.List(ctx, RunFilter{Workflow: "rare", Limit: 5})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, "rare", list[0].ID)

	list, err = l.List(ctx, RunFilter{Limit: 3})
	require.NoError(t, err)
	require.Equal(t, "c299", list[0].ID)
	require.Len(t, list, 3)
}

func TestRunLogWriteRefusesRecordsItCannotFileAndConfigIsValidated(t *testing.T) {
	t.Parallel()
	l, js := newTestRunLog(t, RunLogConfig{})
	ctx := context.Background()
	require.ErrorContains(t, l.Write(ctx, testRun("", "signup", RunSucceeded, time.Now())), "empty run ID")
	require.ErrorContains(t, l.Write(ctx, testRun("x", "a.b", RunSucceeded, time.Now())), "subject token")
	require.ErrorContains(t, l.Write(ctx, testRun("x", "signup", "done", time.Now())), "status")

	_, err := NewRunLog(ctx, js, RunLogConfig{Stream: "BAD", MaxAge: -time.Second})
	require.ErrorContains(t, err, "MaxAge")

	s, err := js.Stream(ctx, RunLogStreamDefault)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	require.Equal(t, RunLogMaxAgeDefault, cfg.MaxAge)
	require.Equal(t, RunLogMaxBytesDefault, cfg.MaxBytes)
	require.Equal(t, jetstream.FileStorage, cfg.Storage)
}

func TestOpenRunLogReadsAnExistingLogWithItsPrefix(t *testing.T) {
	t.Parallel()
	l, js := newTestRunLog(t, RunLogConfig{Stream: "R2", SubjectPrefix: "audit.runs"})
	ctx := context.Background()
	require.NoError(t, l.Write(ctx, testRun("a", "signup", RunSucceeded, time.Now())))
	r, err := OpenRunLog(ctx, js, RunLogConfig{Stream: "R2"})
	require.NoError(t, err)
	got, err := r.Get(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, "signup", got.Workflow)
}

func TestRunRecordOfAHugeLoopIsTrimmedToFitOneMessageFailuresFirst(t *testing.T) {
	t.Parallel()
	r := RunRecord{ID: "big", Workflow: "batch", Status: RunPartial}
	for i := range 20000 {
		it := RunItem{Index: i, Outcome: outcome.Created, CustomerID: "6b08873b8707a01d6329785a", Attempts: 1}
		if i%1000 == 0 {
			it = RunItem{Index: i, Outcome: outcome.Exhausted, Attempts: 5, Error: "kustomer: create: 503 Service Unavailable"}
		}
		r.Items = append(r.Items, it)
	}
	data, err := fitRecord(r, 64<<10)
	require.NoError(t, err)
	require.LessOrEqual(t, len(data), 64<<10)
	var got RunRecord
	require.NoError(t, json.Unmarshal(data, &got))
	require.Equal(t, 20000, len(got.Items)+got.ItemsOmitted)
	failed := 0
	for _, it := range got.Items {
		if it.Outcome.Failed() {
			failed++
		}
	}
	require.Equal(t, 20, failed, "every failed item is kept")
	require.Greater(t, len(got.Items), 500, "as many created items as fit")

	small, err := fitRecord(RunRecord{ID: "s", Items: r.Items[:3]}, 64<<10)
	require.NoError(t, err)
	require.NotContains(t, string(small), "items_omitted")
}

func TestTheRunLogStreamOverlappingAnotherIsRefusedNamingTheOtherStream(t *testing.T) {
	t.Parallel()
	_, js := natstest.Start(t).Connect(t)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"runs.*.>", "audit.>"}})
	require.NoError(t, err)

	_, err = NewRunLog(ctx, js, RunLogConfig{})
	require.ErrorContains(t, err, "worker: stream RUNS cannot capture its subject runs.>: stream AUDIT already captures runs.*.>")
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr, "JetStream's own error stays in the chain")
}
