package dlq_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// bundle is one embedded NATS server with a LEADS stream (the source of
// replays) and the dead-letter stream.
type bundle struct {
	js    jetstream.JetStream
	nc    *nats.Conn
	leads jetstream.Stream
	dlq   jetstream.Stream
	store *dlq.Store
}

func setup(t *testing.T) bundle {
	t.Helper()
	return setupOn(t, natstest.Start(t))
}

// setupOn is setup on srv.
func setupOn(t *testing.T, srv *natstest.Server) bundle {
	t.Helper()
	ctx := context.Background()
	nc, js := srv.Connect(t)
	leads, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	require.NoError(t, err)
	ds, err := dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(t, err)
	store, err := dlq.OpenStore(ctx, js, "")
	require.NoError(t, err)
	return bundle{js: js, nc: nc, leads: leads, dlq: ds, store: store}
}

// requireGone wants no entry id in the store.
func (b bundle) requireGone(t *testing.T, id uint64) {
	t.Helper()
	_, err := b.store.Get(context.Background(), id)
	require.ErrorIs(t, err, dlq.ErrNotFound)
}

// requireReplayedOnce wants one event in LEADS and no entry id left: the
// entry was replayed once.
func (b bundle) requireReplayedOnce(t *testing.T, id uint64) {
	t.Helper()
	require.Len(t, consumeLeads(t, b), 1)
	b.requireGone(t, id)
}

// publish dead-letters r to dlq.<workflow> and returns the stored record.
func (b bundle) publish(t *testing.T, r dlq.Record) dlq.Record {
	t.Helper()
	require.NoError(t, dlq.Publish(context.Background(), b.js, dlq.Subject(r.Workflow), r))
	info, err := b.dlq.Info(context.Background())
	require.NoError(t, err)
	got, err := b.store.Get(context.Background(), info.State.LastSeq)
	require.NoError(t, err)
	return got
}

func rec(workflow string, class outcome.Outcome, seq uint64, payload string) dlq.Record {
	return dlq.Record{
		Workflow:  workflow,
		Class:     class,
		Error:     fmt.Sprintf("%s failed", class),
		Attempts:  1,
		Subject:   "leads." + workflow,
		StreamSeq: seq,
		MsgID:     fmt.Sprintf("lead-%d", seq),
		Payload:   []byte(payload),
	}
}

func TestEveryClassLandsInTheDeadLetterStreamWithItsHeadersAndThePayloadUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := time.Date(2025, 3, 1, 10, 0, 0, 123456789, time.UTC)
	last := first.Add(90 * time.Second)
	// Not JSON, odd bytes and whitespace: it must come back byte for byte.
	payload := []byte("{\"name\": \"Ada\",\n \"x\": \"\xff\x00\"  \r\n")
	cases := []dlq.Record{
		{Class: outcome.InvalidEvent, Error: "worker: event is not a JSON object", Attempts: 1},
		{Class: outcome.Mapping, Error: "mapping: {{trigger.nme}}: no such field", Attempts: 1},
		{Class: outcome.Validation, Error: "mapping: emails[0].email: not an email", Attempts: 1, Items: []int{2}},
		{Class: outcome.Permanent, Error: "kustomer: create: 400 badparam: bad", Attempts: 1, Items: []int{0, 3, 7}, StatusCode: 400, Code: "badparam"},
		{Class: outcome.Exhausted, Error: "kustomer: create: 503 unavailable", Attempts: 5, Items: []int{1}, StatusCode: 503},
		{Class: outcome.MaxDeliveries, Error: "worker: JetStream stopped redelivering", Attempts: 3},
	}
	for i, want := range cases {
		want.Workflow = "signup"
		want.Subject = "leads.signup"
		want.StreamSeq = uint64(100 + i)
		want.MsgID = fmt.Sprintf("evt-%d", i)
		want.FirstFailure = first
		want.LastFailure = last
		want.Payload = payload
		got := b.publish(t, want)

		require.Equal(t, payload, got.Payload, "payload byte for byte")
		require.NotZero(t, got.ID)
		require.WithinDuration(t, time.Now(), got.Time, time.Minute)
		want.ID, want.Time = got.ID, got.Time
		require.Equal(t, want, got)

		raw, err := b.dlq.GetMsg(context.Background(), got.ID)
		require.NoError(t, err)
		require.Equal(t, "dlq.signup", raw.Subject)
		h := raw.Header
		require.Equal(t, want.Class.String(), h.Get(dlq.HeaderClass))
		require.Equal(t, want.Error, h.Get(dlq.HeaderError))
		require.Equal(t, fmt.Sprint(want.Attempts), h.Get(dlq.HeaderAttempts))
		require.Equal(t, "signup", h.Get(dlq.HeaderWorkflow))
		require.Equal(t, "leads.signup", h.Get(dlq.HeaderSubject))
		require.Equal(t, fmt.Sprint(100+i), h.Get(dlq.HeaderStreamSeq))
		require.Equal(t, want.MsgID, h.Get(dlq.HeaderMsgID))
		require.Equal(t, dlq.FormatItems(want.Items), h.Get(dlq.HeaderItems))
		require.Equal(t, "2025-03-01T10:00:00.123456789Z", h.Get(dlq.HeaderFirstFailure))
		require.Equal(t, "2025-03-01T10:01:30.123456789Z", h.Get(dlq.HeaderLastFailure))
		if want.StatusCode != 0 {
			require.Equal(t, fmt.Sprint(want.StatusCode), h.Get(dlq.HeaderStatusCode))
		} else {
			require.Empty(t, h.Values(dlq.HeaderStatusCode))
		}
		require.Equal(t, want.Code, h.Get(dlq.HeaderKustomerCode))
	}
}

func TestPublishingTheSameFailureTwiceStoresItOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := rec("signup", outcome.Permanent, 7, `{"a":1}`)
	r.Items = []int{1, 2}
	b.publish(t, r)
	b.publish(t, r) // crash between dead-letter publish and ack: same failure again
	other := r
	other.Items = []int{3}
	b.publish(t, other) // a different failure of the same event is its own entry

	list, err := b.store.List(context.Background(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, list, 2)
}

func TestPublishFailsWhenNoStreamCapturesTheSubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	err := dlq.Publish(context.Background(), b.js, "nowhere.signup", rec("signup", outcome.Mapping, 1, "{}"))
	require.Error(t, err, "the worker must then leave the event unacknowledged")
	require.True(t, strings.HasPrefix(err.Error(), "dlq: "), err.Error())
}

func TestPublishRefusesAnUnknownClass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	err := dlq.Publish(context.Background(), b.js, "dlq.signup", rec("signup", outcome.Paused, 1, "{}"))
	require.ErrorContains(t, err, "class")
}

func TestARecordBuiltFromAKustomerErrorNeverHoldsTheAPIKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const key = "eyJhbGciOiJIUzI1NiJ9.eyJvcmciOiJzZWNyZXQtb3JnIn0.c2lnbmF0dXJlLXNlY3JldA"
	// A Kustomer-like server that echoes the Authorization header in its
	// error, the worst case for leaking the key.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"errors":[{"code":"badparam","title":"bad request with Authorization: %s"}]}`, r.Header.Get("Authorization"))
	}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/customers", strings.NewReader(`{"name":"Ada"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, string(body), key, "the fake must really echo the key")

	// The message a Kustomer client error gives: status, code and body.
	r := rec("signup", outcome.Permanent, 9, `{"name":"Ada","email":"ada@example.com"}`)
	r.Error = fmt.Sprintf("loop: item 0: kustomer: create: %d badparam: %s", resp.StatusCode, body)
	r.StatusCode, r.Code = resp.StatusCode, "badparam"

	got := b.publish(t, r)
	raw, err := b.dlq.GetMsg(context.Background(), got.ID)
	require.NoError(t, err)
	for name, values := range raw.Header {
		for _, v := range values {
			require.NotContains(t, v, key, "header %s", name)
			require.NotContains(t, v, "c2lnbmF0dXJlLXNlY3JldA", "header %s", name)
		}
	}
	require.NotContains(t, string(raw.Data), key)
	require.Contains(t, raw.Header.Get(dlq.HeaderError), "[redacted]")
	require.Contains(t, raw.Header.Get(dlq.HeaderError), "badparam", "the useful part of the error stays")
}

func TestErrorHeaderIsOneBoundedLine(t *testing.T) {
	t.Parallel()
	r := dlq.Record{Class: outcome.Permanent, Error: "first line\r\nsecond line " + strings.Repeat("é", 5000)}
	h := r.Header().Get(dlq.HeaderError)
	require.NotContains(t, h, "\n")
	require.NotContains(t, h, "\r")
	require.True(t, strings.HasPrefix(h, "first line  second line"))
	require.LessOrEqual(t, len(h), 4096+len("…"))
}

func TestParseItemsReadsSortsAndRejects(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]int{"": nil, " ": nil, "0": {0}, "7,0,3": {0, 3, 7}, " 1 , 1,2": {1, 2}} {
		got, err := dlq.ParseItems(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"a", "1,,2", "-1", "1;2"} {
		_, err := dlq.ParseItems(in)
		require.Error(t, err, in)
		require.True(t, strings.HasPrefix(err.Error(), "dlq: "), err.Error())
	}
	require.Equal(t, "0,3,7", dlq.FormatItems([]int{0, 3, 7}))
}

func TestRecordFromMsgKeepsAnEntryWithAMalformedHeader(t *testing.T) {
	t.Parallel()
	m := &jetstream.RawStreamMsg{Sequence: 4, Data: []byte("x"), Header: nats.Header{
		dlq.HeaderAttempts: {"many"}, dlq.HeaderWorkflow: {"signup"}, dlq.HeaderClass: {"mapping"},
	}}
	r, err := dlq.RecordFromMsg(m)
	require.ErrorContains(t, err, dlq.HeaderAttempts)
	require.Equal(t, uint64(4), r.ID)
	require.Equal(t, "signup", r.Workflow)
	require.Equal(t, outcome.Mapping, r.Class)
	require.Equal(t, []byte("x"), r.Payload)
}

func TestRecordFromMsgReportsAClassThatIsNoFailureAndKeepsTheEntry(t *testing.T) {
	t.Parallel()
	for _, class := range []string{"oops", "created", "paused"} {
		m := &jetstream.RawStreamMsg{Sequence: 5, Data: []byte("x"), Header: nats.Header{
			dlq.HeaderWorkflow: {"signup"}, dlq.HeaderClass: {class},
		}}
		r, err := dlq.RecordFromMsg(m)
		require.ErrorContains(t, err, dlq.HeaderClass, class)
		require.Equal(t, outcome.None, r.Class, class)
		require.Equal(t, "signup", r.Workflow, class)
	}
}

func TestDlqDoesNotImportTheKustomerClient(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	for _, dep := range strings.Fields(string(out)) {
		require.NotEqual(t, "github.com/kustomer-sync/kustomer-sync/kustomer", dep,
			"dlq holds Kustomer's status and code as plain fields; the worker fills them")
	}
}

func TestListFiltersByWorkflowClassSinceGrepAndIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a1 := b.publish(t, rec("signup", outcome.Mapping, 1, `{"email":"ada@example.com"}`))
	a2 := b.publish(t, rec("signup", outcome.Permanent, 2, `{"email":"bob@example.com"}`))
	b1 := b.publish(t, rec("import", outcome.Permanent, 3, `{"email":"cy@example.com"}`))

	ids := func(f dlq.Filter) []uint64 {
		t.Helper()
		list, err := b.store.List(ctx, f)
		require.NoError(t, err)
		out := []uint64{}
		for _, r := range list {
			out = append(out, r.ID)
		}
		return out
	}
	require.Equal(t, []uint64{a1.ID, a2.ID, b1.ID}, ids(dlq.Filter{}))
	require.Equal(t, []uint64{a1.ID, a2.ID}, ids(dlq.Filter{Workflow: "signup"}))
	require.Equal(t, []uint64{a2.ID, b1.ID}, ids(dlq.Filter{Class: outcome.Permanent}))
	require.Equal(t, []uint64{a2.ID}, ids(dlq.Filter{Workflow: "signup", Class: outcome.Permanent}))
	require.Equal(t, []uint64{b1.ID}, ids(dlq.Filter{Grep: "cy@example"}), "grep the payload")
	require.Equal(t, []uint64{a1.ID}, ids(dlq.Filter{Grep: "mapping failed"}), "grep the error")
	_, err := b.store.List(ctx, dlq.Filter{IDs: []uint64{a1.ID, 999}})
	require.ErrorIs(t, err, dlq.ErrNotFound, "an id the stream never held")
	require.EqualError(t, err, "dlq: no entry 999 in LEADS_DLQ: its entries go up to 3 (see 'kustomer-sync dlq list')")
	n, err := b.store.Purge(ctx, dlq.Filter{IDs: []uint64{a2.ID}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []uint64{a1.ID}, ids(dlq.Filter{IDs: []uint64{a1.ID, a2.ID}}), "an id already removed is left out")
	require.Equal(t, []uint64{}, ids(dlq.Filter{IDs: []uint64{b1.ID}, Workflow: "signup"}))
	require.Equal(t, []uint64{}, ids(dlq.Filter{Since: time.Now().Add(time.Hour)}))
	require.Equal(t, []uint64{b1.ID}, ids(dlq.Filter{Since: b1.Time}))
}

func TestGetOfAMissingEntryIsNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.requireGone(t, 42)
}

func TestOpenStoreOfAMissingStreamSaysSo(t *testing.T) {
	t.Parallel()
	_, js := natstest.Start(t).Connect(t)
	_, err := dlq.OpenStore(context.Background(), js, "NOPE")
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)
}

func TestStatsCountByWorkflowAndClass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(t, rec("signup", outcome.Mapping, 1, "{}"))
	b.publish(t, rec("signup", outcome.Mapping, 2, "{}"))
	b.publish(t, rec("signup", outcome.Exhausted, 3, "{}"))
	b.publish(t, rec("import", outcome.Permanent, 4, "{}"))
	stats, err := b.store.Stats(context.Background(), dlq.Filter{})
	require.NoError(t, err)
	require.Equal(t, map[string]map[outcome.Outcome]int{
		"signup": {outcome.Mapping: 2, outcome.Exhausted: 1},
		"import": {outcome.Permanent: 1},
	}, stats)
	stats, err = b.store.Stats(context.Background(), dlq.Filter{Workflow: "import"})
	require.NoError(t, err)
	require.Equal(t, map[string]map[outcome.Outcome]int{"import": {outcome.Permanent: 1}}, stats)
}

func TestPurgeDeletesOnlyWhatTheFilterSelectsAndRefusesAnEmptyFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.publish(t, rec("signup", outcome.Mapping, 1, "{}"))
	b.publish(t, rec("signup", outcome.Permanent, 2, "{}"))
	keep := b.publish(t, rec("import", outcome.Permanent, 3, "{}"))

	_, err := b.store.Purge(ctx, dlq.Filter{})
	require.ErrorContains(t, err, "empty filter")

	n, err := b.store.Purge(ctx, dlq.Filter{Workflow: "signup"})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	list, err := b.store.List(ctx, dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, keep.ID, list[0].ID)

	n, err = b.store.Purge(ctx, dlq.Filter{All: true})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	list, err = b.store.List(ctx, dlq.Filter{})
	require.NoError(t, err)
	require.Empty(t, list)
}

// consumeLeads reads every message on LEADS from the start.
func consumeLeads(t *testing.T, b bundle) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	info, err := b.leads.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := b.leads.GetMsg(ctx, seq)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func TestReplayOfAnEntryWithItemsRepublishesThemAndRemovesTheEntryAfterTheAck(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	payload := `{"leads":[{"email":"a@x.io"},{"email":"b@x.io"},{"email":"c@x.io"}]}`
	r := rec("signup", outcome.Exhausted, 12, payload)
	r.Items = []int{0, 2}
	entry := b.publish(t, r)

	var progress [][2]int
	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{entry.ID}}, dlq.ReplayOptions{
		Progress: func(done, total int) { progress = append(progress, [2]int{done, total}) },
	})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Equal(t, 0, res.Skipped)
	require.Len(t, res.Entries, 1)
	require.Equal(t, [][2]int{{1, 1}}, progress)

	leads := consumeLeads(t, b)
	require.Len(t, leads, 1)
	m := leads[0]
	require.Equal(t, "leads.signup", m.Subject)
	require.Equal(t, payload, string(m.Data))
	require.Equal(t, "0,2", m.Header.Get(dlq.HeaderReplayItems))
	require.Equal(t, fmt.Sprint(entry.ID), m.Header.Get(dlq.HeaderReplayOf))
	require.Equal(t, "signup", m.Header.Get(dlq.HeaderReplayWorkflow))
	require.Equal(t, dlq.ReplayMsgID(dlq.StreamDefault, b.dlq.CachedInfo().Created, entry), m.Header.Get(nats.MsgIdHdr))

	key, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
	require.NoError(t, err)
	rp, err := key.ReadReplay(m.Subject, m.Header, m.Data)
	require.NoError(t, err, "the replay verifies with the deployment's key")
	require.Equal(t, &dlq.Replay{
		Stream: dlq.StreamDefault, Entry: entry.ID, Workflow: "signup", Items: []int{0, 2},
		EventKey: "lead-12", EventID: "lead-12", Attempts: 1, Count: 1,
	}, rp, "the original identity travels with the replay")

	_, err = b.store.Get(ctx, entry.ID)
	require.ErrorIs(t, err, dlq.ErrNotFound, "the entry is removed once the republish is acked")
}

func TestReplayOfAWholeEventSetsNoItemsHeader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(t, rec("signup", outcome.Mapping, 3, `{"name":"Ada"}`))
	res, err := b.store.Replay(context.Background(), dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	leads := consumeLeads(t, b)
	require.Len(t, leads, 1)
	require.Empty(t, leads[0].Header.Values(dlq.HeaderReplayItems))
}

func TestASecondIdenticalReplayPublishesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	b.publish(t, rec("signup", outcome.Permanent, 2, `{"n":2}`))
	f := dlq.Filter{Workflow: "signup"}

	res, err := b.store.Replay(ctx, f, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 2, res.Replayed)
	res, err = b.store.Replay(ctx, f, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, dlq.ReplayResult{}, res)
	require.Len(t, consumeLeads(t, b), 2)
}

func TestReplayInterruptedBeforeTheDeleteIsRepublishedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	entry := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	// The first replay published, then died before deleting the entry.
	key, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
	require.NoError(t, err)
	earlier, err := b.store.ReplayMessage(ctx, key, entry)
	require.NoError(t, err)
	_, err = b.js.PublishMsg(ctx, earlier)
	require.NoError(t, err)

	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{entry.ID}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 0, res.Replayed)
	require.Equal(t, 1, res.Skipped)
	b.requireReplayedOnce(t, entry.ID)
}

func TestDryRunReplayChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	entry := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	res, err := b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{DryRun: true})
	require.NoError(t, err)
	require.Equal(t, 0, res.Replayed)
	require.Len(t, res.Entries, 1)
	require.Equal(t, entry.ID, res.Entries[0].ID)
	require.Empty(t, consumeLeads(t, b))
	_, err = b.store.Get(ctx, entry.ID)
	require.NoError(t, err)
}

func TestReplayRefusesAnEmptyFilterAndKeepsEntriesItCannotRepublish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.store.Replay(ctx, dlq.Filter{}, dlq.ReplayOptions{})
	require.ErrorContains(t, err, "empty filter")

	r := rec("signup", outcome.Permanent, 1, `{}`)
	r.Subject = "nostream.signup" // no stream captures it any more
	entry := b.publish(t, r)
	res, err := b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.Error(t, err)
	require.Equal(t, 0, res.Replayed)
	_, err = b.store.Get(ctx, entry.ID)
	require.NoError(t, err, "an entry whose republish failed stays")
}

func TestReplayHonoursTheRate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 3 {
		b.publish(t, rec("signup", outcome.Permanent, uint64(i+1), `{}`))
	}
	start := time.Now()
	res, err := b.store.Replay(context.Background(), dlq.Filter{All: true}, dlq.ReplayOptions{Rate: 20})
	require.NoError(t, err)
	require.Equal(t, 3, res.Replayed)
	// Burst 1 at 20/s: the 2nd and 3rd wait 50 ms each.
	require.GreaterOrEqual(t, time.Since(start), 90*time.Millisecond)
}

func TestEnsureStreamUsesFileStorageAndConfiguredLimits(t *testing.T) {
	t.Parallel()
	_, js := natstest.Start(t).Connect(t)
	s, err := dlq.EnsureStream(context.Background(), js, dlq.StreamConfig{Name: "DL", Subjects: []string{"dead.>"}, MaxAge: time.Hour, MaxBytes: 1 << 20})
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	require.Equal(t, jetstream.FileStorage, cfg.Storage)
	require.Equal(t, []string{"dead.>"}, cfg.Subjects)
	require.Equal(t, time.Hour, cfg.MaxAge)
	require.Equal(t, int64(1<<20), cfg.MaxBytes)
	require.Equal(t, jetstream.DiscardNew, cfg.Discard)

	_, err = dlq.EnsureStream(context.Background(), js, dlq.StreamConfig{MaxBytes: -1})
	require.ErrorContains(t, err, "MaxBytes")
}

func TestReplayHeadersVerifyOnlyWithTheDeploymentKeyAndUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	r := rec("signup", outcome.Exhausted, 7, `{"leads":[1,2,3]}`)
	r.Items = []int{1}
	b.publish(t, r)
	_, err := b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.NoError(t, err)
	m := consumeLeads(t, b)[0]
	key, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
	require.NoError(t, err)
	_, err = key.ReadReplay(m.Subject, m.Header, m.Data)
	require.NoError(t, err)

	changed := func(edit func(h nats.Header)) nats.Header {
		h := nats.Header{}
		for k, v := range m.Header {
			h[k] = append([]string(nil), v...)
		}
		edit(h)
		return h
	}
	for name, h := range map[string]nats.Header{
		"another workflow": changed(func(h nats.Header) { h.Set(dlq.HeaderReplayWorkflow, "other") }),
		"more items":       changed(func(h nats.Header) { h.Set(dlq.HeaderReplayItems, "0,1,2") }),
		"another event":    changed(func(h nats.Header) { h.Set(dlq.HeaderReplayEventKey, "someone-else") }),
		"no signature":     changed(func(h nats.Header) { h.Del(dlq.HeaderReplaySig) }),
		"a publisher's":    {dlq.HeaderReplayWorkflow: {"other"}, dlq.HeaderMsgID: {"lead-1"}},
		"old style":        {dlq.HeaderMsgID: {"lead-1"}},
		"any case":         {"ksync-replay-items": {"0"}},
	} {
		rp, err := key.ReadReplay(m.Subject, h, m.Data)
		require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, name)
		require.Nil(t, rp, name)
	}
	_, err = key.ReadReplay("leads.other", m.Header, m.Data)
	require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, "another subject")
	_, err = key.ReadReplay(m.Subject, m.Header, []byte(`{"leads":[9]}`))
	require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, "another payload")

	other, err := dlq.LoadReplayKey(ctx, b.js, "OTHER_KEYS", 1)
	require.NoError(t, err)
	_, err = other.ReadReplay(m.Subject, m.Header, m.Data)
	require.ErrorIs(t, err, dlq.ErrUnverifiedReplay, "another deployment's key")
	require.Equal(t, "[redacted] [redacted] [redacted]", fmt.Sprintf("%v %+v %#v", key, key, key), "the key never prints")

	rp, err := key.ReadReplay(m.Subject, nats.Header{"X-Trace": {"1"}}, m.Data)
	require.NoError(t, err, "an ordinary event")
	require.Nil(t, rp)
}

func TestLoadReplayKeyCreatesOneKeyThatEveryCallerShares(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	keys := make(chan *dlq.ReplayKey, 4)
	for range cap(keys) {
		go func() {
			k, err := dlq.LoadReplayKey(ctx, b.js, "", 1)
			assert.NoError(t, err)
			keys <- k
		}()
	}
	r := rec("signup", outcome.Permanent, 1, `{}`)
	entry := b.publish(t, r)
	var sigs []string
	for range cap(keys) {
		m, err := b.store.ReplayMessage(ctx, <-keys, entry)
		require.NoError(t, err)
		sigs = append(sigs, m.Header.Get(dlq.HeaderReplaySig))
	}
	require.Equal(t, []string{sigs[0], sigs[0], sigs[0], sigs[0]}, sigs, "one key, created once")
}

func TestReplayOfAnEntryOfARecreatedStreamIsStoredAsNew(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	first := b.publish(t, rec("signup", outcome.Permanent, 1, `{"name":"Ann"}`))
	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{first.ID}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)

	// An operator deletes and recreates the dead-letter stream: sequences
	// start again at 1, within the leads stream's duplicate window.
	require.NoError(t, b.js.DeleteStream(ctx, dlq.StreamDefault))
	ds, err := dlq.EnsureStream(ctx, b.js, dlq.StreamConfig{})
	require.NoError(t, err)
	b.dlq = ds
	b.store, err = dlq.OpenStore(ctx, b.js, "")
	require.NoError(t, err)
	second := b.publish(t, rec("signup", outcome.Permanent, 2, `{"name":"Bob"}`))
	require.Equal(t, first.ID, second.ID, "the new entry has the old one's id")

	res, err = b.store.Replay(ctx, dlq.Filter{IDs: []uint64{second.ID}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed, "stored as new, not taken for the old entry's replay")
	require.Equal(t, 0, res.Skipped)
	leads := consumeLeads(t, b)
	require.Len(t, leads, 2)
	require.Equal(t, `{"name":"Bob"}`, string(leads[1].Data))
	require.NotEqual(t, leads[0].Header.Get(nats.MsgIdHdr), leads[1].Header.Get(nats.MsgIdHdr))
}

func TestADuplicateReplayIDHeldByAnotherMessageKeepsTheEntry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	entry := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	id := dlq.ReplayMsgID(dlq.StreamDefault, b.dlq.CachedInfo().Created, entry)
	// Someone who guessed the id published something else under it.
	_, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: "leads.signup", Data: []byte(`{}`)}, jetstream.WithMsgID(id))
	require.NoError(t, err)

	_, err = b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{})
	require.ErrorContains(t, err, "is not this entry's replay; entry kept")
	_, err = b.store.Get(ctx, entry.ID)
	require.NoError(t, err, "the entry stays")
}

func TestConcurrentReplaysOfOneEntryAllSucceedAndPublishItOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	entry := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	const n = 8
	errs := make(chan error, n)
	results := make(chan dlq.ReplayResult, n)
	start := make(chan struct{})
	for range n {
		go func() {
			store, err := dlq.OpenStore(ctx, b.js, "")
			if err != nil {
				errs <- err
				return
			}
			<-start
			res, err := store.Replay(ctx, dlq.Filter{IDs: []uint64{entry.ID}}, dlq.ReplayOptions{})
			results <- res
			errs <- err
		}()
	}
	close(start)
	replayed, others := 0, 0
	for range n {
		require.NoError(t, <-errs, "an entry another process replayed is a success")
	}
	for range n {
		res := <-results
		replayed += res.Replayed
		others += res.Skipped + len(res.Gone)
	}
	require.Equal(t, 1, replayed, "one replay stored it")
	require.Equal(t, n-1, others, "the others found it stored or gone")
	b.requireReplayedOnce(t, entry.ID)
}

func TestAnEntryDeletedByAnotherProcessDuringReplayIsASuccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	entry := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	other, err := dlq.OpenStore(ctx, b.js, "")
	require.NoError(t, err)
	// Between this replay's listing and its delete, another process
	// replays the entry to the end.
	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{entry.ID}}, dlq.ReplayOptions{Check: func(ctx context.Context, r dlq.Record) error {
		res, err := other.Replay(ctx, dlq.Filter{IDs: []uint64{r.ID}}, dlq.ReplayOptions{})
		assert.Equal(t, 1, res.Replayed)
		return err
	}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Skipped, "the other process stored it")
	require.Len(t, consumeLeads(t, b), 1)
}

func TestReplayOfAnIDTheStreamNeverHeldIsAnErrorAndOfARemovedOneIsReportedGone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{999}}, dlq.ReplayOptions{})
	require.ErrorIs(t, err, dlq.ErrNotFound)
	require.EqualError(t, err, "dlq: no entry 999 in LEADS_DLQ: it has never held an entry")

	e1 := b.publish(t, rec("signup", outcome.Permanent, 1, `{"n":1}`))
	e2 := b.publish(t, rec("signup", outcome.Permanent, 2, `{"n":2}`))
	res, err := b.store.Replay(ctx, dlq.Filter{IDs: []uint64{e1.ID, 999}}, dlq.ReplayOptions{})
	require.ErrorContains(t, err, "no entry 999 in LEADS_DLQ: its entries go up to 2")
	require.Equal(t, dlq.ReplayResult{}, res, "nothing replayed when an id is wrong")
	require.Empty(t, consumeLeads(t, b))

	res, err = b.store.Replay(ctx, dlq.Filter{IDs: []uint64{e1.ID}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	res, err = b.store.Replay(ctx, dlq.Filter{IDs: []uint64{e1.ID, e2.ID}}, dlq.ReplayOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Equal(t, []uint64{e1.ID}, res.Gone)
}

func TestReplayKeepsTheEntriesTheCheckRefusesAndGoesOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	gone := b.publish(t, rec("renamed", outcome.Permanent, 1, `{"n":1}`))
	live := b.publish(t, rec("signup", outcome.Permanent, 2, `{"n":2}`))
	check := func(_ context.Context, r dlq.Record) error {
		if r.Workflow == "renamed" {
			return fmt.Errorf("workflow %q no longer exists", r.Workflow)
		}
		return nil
	}
	res, err := b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{DryRun: true, Check: check})
	require.NoError(t, err)
	require.Len(t, res.Entries, 1)
	require.Len(t, res.Kept, 1, "a dry run says what would be kept")

	res, err = b.store.Replay(ctx, dlq.Filter{All: true}, dlq.ReplayOptions{Check: check})
	require.NoError(t, err)
	require.Equal(t, 1, res.Replayed)
	require.Equal(t, live.ID, res.Entries[0].ID)
	require.Len(t, res.Kept, 1)
	require.Equal(t, gone.ID, res.Kept[0].Record.ID)
	require.EqualError(t, res.Kept[0].Reason, `workflow "renamed" no longer exists`)
	_, err = b.store.Get(ctx, gone.ID)
	require.NoError(t, err, "the refused entry stays")
	require.Len(t, consumeLeads(t, b), 1)
}

func TestARecordCarriesAReplaysHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := rec("signup", outcome.Exhausted, 9, `{}`)
	r.EventKey, r.Run, r.FirstFailure = "lead-1", "LEADS-9-1", first.Add(time.Hour)
	r = r.ApplyReplay(&dlq.Replay{Entry: 3, Count: 2, Attempts: 7, OriginalRun: "LEADS-1-1", FirstFailure: first})
	got := b.publish(t, r)
	require.Equal(t, uint64(3), got.ReplayedFrom)
	require.Equal(t, 2, got.Replays)
	require.Equal(t, 7, got.PriorAttempts)
	require.Equal(t, "LEADS-1-1", got.OriginalRun)
	require.Equal(t, "LEADS-9-1", got.Run)
	require.Equal(t, "lead-1", got.EventKey)
	require.True(t, first.Equal(got.FirstFailure), "the first failure is the event's first")
}
