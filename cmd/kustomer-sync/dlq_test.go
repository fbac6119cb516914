package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// cliBundle is an embedded NATS with a LEADS stream and the dead-letter
// stream, and a way to run the CLI against it.
type cliBundle struct {
	url   string
	js    jetstream.JetStream
	leads jetstream.Stream
	store *dlq.Store
}

func newCLIBundle(t *testing.T) cliBundle {
	t.Helper()
	ctx := context.Background()
	srv, js, stream := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	// The consumers a worker running these workflows keeps: replay checks
	// the entry's workflow still reads its subject.
	for _, wf := range []string{"signup", "import"} {
		_, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: leads.ConsumerPrefixDefault + wf, FilterSubject: "leads." + wf, AckPolicy: jetstream.AckExplicitPolicy,
		})
		require.NoError(t, err)
	}
	_, err := dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(t, err)
	store, err := dlq.OpenStore(ctx, js, "")
	require.NoError(t, err)
	return cliBundle{url: srv.ClientURL(), js: js, leads: stream, store: store}
}

// cli runs the binary's run function with stdin; it returns stdout, stderr
// and the error.
func (b cliBundle) cli(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--nats-url", b.url, "--log-format", "json")
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func (b cliBundle) deadLetter(t *testing.T, workflow string, class outcome.Outcome, seq uint64, items []int, payload string) {
	t.Helper()
	r := dlq.Record{
		Workflow: workflow, Class: class, Error: fmt.Sprintf("%s: it broke", class), Attempts: 2,
		Subject: "leads." + workflow, StreamSeq: seq, MsgID: fmt.Sprint("lead-", seq), Items: items,
		LastFailure: time.Now(), Payload: []byte(payload),
	}
	require.NoError(t, dlq.Publish(context.Background(), b.js, dlq.Subject(workflow), r))
}

func (b cliBundle) count(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func (b cliBundle) dlqCount(t *testing.T) int {
	t.Helper()
	list, err := b.store.List(context.Background(), dlq.Filter{})
	require.NoError(t, err)
	return len(list)
}

func TestDLQListPrintsATableAndFilters(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, []int{0, 2}, `{"name":"Ada"}`)
	b.deadLetter(t, "import", outcome.Mapping, 2, nil, `{"name":"Bob"}`)

	out, _, err := b.cli(t, "", "dlq", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^ID\s+WORKFLOW\s+CLASS\s+FAILED ITEMS\s+ATTEMPTS\s+ERROR\s+AGE$`, lines[0])
	require.Regexp(t, `^1\s+signup\s+permanent\s+#0,#2\s+2\s+permanent: it broke\s+\d+s$`, lines[1])
	require.Regexp(t, `^2\s+import\s+mapping\s+all\s+2\s+mapping: it broke\s+\d+s$`, lines[2])

	out, _, err = b.cli(t, "", "dlq", "list", "--workflow", "import")
	require.NoError(t, err)
	require.NotContains(t, out, "signup")
	require.Contains(t, out, "import")

	out, _, err = b.cli(t, "", "dlq", "list", "--grep", "Ada", "--json")
	require.NoError(t, err)
	var got []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got, 1)
	require.Equal(t, "signup", got[0]["workflow"])
	require.Equal(t, map[string]any{"name": "Ada"}, got[0]["payload"])

	out, _, err = b.cli(t, "", "dlq", "list", "--since", "1h", "--class", "exhausted")
	require.NoError(t, err)
	require.Equal(t, "No dead letters in LEADS_DLQ matching the filter.\n", out)
}

func TestDLQListRejectsABadClassOrSinceAsAUsageError(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	_, _, err := b.cli(t, "", "dlq", "list", "--class", "nope")
	require.ErrorContains(t, err, "--class")
	require.Equal(t, 2, exitCode(err))
	_, _, err = b.cli(t, "", "dlq", "list", "--since", "yesterday")
	require.ErrorContains(t, err, "--since")
	require.Equal(t, 2, exitCode(err))
}

func TestDLQShowPrintsHeadersErrorAndPrettyPayload(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Exhausted, 9, []int{1}, `{"name":"Ada","emails":[{"email":"ada@example.com"}]}`)
	out, _, err := b.cli(t, "", "dlq", "show", "1")
	require.NoError(t, err)
	require.Contains(t, out, "Ksync-Class: exhausted")
	require.Contains(t, out, "Ksync-Stream-Seq: 9")
	require.Contains(t, out, "Error:\n  exhausted: it broke")
	require.Contains(t, out, "{\n  \"name\": \"Ada\",\n  \"emails\": [")

	_, _, err = b.cli(t, "", "dlq", "show", "77")
	require.ErrorIs(t, err, dlq.ErrNotFound)
	_, _, err = b.cli(t, "", "dlq", "show", "x")
	require.Equal(t, 2, exitCode(err))
}

func TestDLQReplayRepublishesRemovesAndASecondRunPublishesNothing(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Exhausted, 1, []int{1}, `{"leads":[1,2]}`)
	b.deadLetter(t, "signup", outcome.Permanent, 2, nil, `{"n":2}`)
	b.deadLetter(t, "import", outcome.Permanent, 3, nil, `{"n":3}`)

	out, _, err := b.cli(t, "", "dlq", "replay", "--workflow", "signup")
	require.NoError(t, err)
	require.Equal(t, "Replayed 2 entries.\n", out, "not a terminal: a plain summary line, no bar")
	require.Equal(t, uint64(2), b.count(t, b.leads))
	require.Equal(t, 1, b.dlqCount(t))

	out, _, err = b.cli(t, "", "dlq", "replay", "--workflow", "signup")
	require.NoError(t, err)
	require.Equal(t, "Nothing to replay.\n", out)
	require.Equal(t, uint64(2), b.count(t, b.leads))

	out, _, err = b.cli(t, "", "dlq", "replay", "3", "--rate", "100")
	require.NoError(t, err)
	require.Equal(t, "Replayed 1 entry.\n", out)
	require.Equal(t, 0, b.dlqCount(t))
}

func TestDLQReplayDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, nil, `{"n":1}`)
	out, _, err := b.cli(t, "", "dlq", "replay", "--all", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "Dry run: would replay 1 entry; nothing changed.")
	require.Equal(t, uint64(0), b.count(t, b.leads))
	require.Equal(t, 1, b.dlqCount(t))
}

func TestDLQReplayWithoutASelectionIsAUsageError(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	_, _, err := b.cli(t, "", "dlq", "replay")
	require.ErrorContains(t, err, "--all")
	require.Equal(t, 2, exitCode(err))
	_, _, err = b.cli(t, "", "dlq", "replay", "--all", "--workflow", "x")
	require.Equal(t, 2, exitCode(err))
	_, _, err = b.cli(t, "", "dlq", "replay", "--all", "--rate", "-1")
	require.Equal(t, 2, exitCode(err))
}

func TestDLQPurgeAsksAndOnlyAYesDeletes(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.InvalidEvent, 1, nil, `not json`)
	b.deadLetter(t, "signup", outcome.InvalidEvent, 2, nil, `nor this`)
	b.deadLetter(t, "signup", outcome.Permanent, 3, nil, `{}`)

	out, _, err := b.cli(t, "n\n", "dlq", "purge", "--class", "invalid_event")
	require.NoError(t, err)
	require.Contains(t, out, "Delete 2 dead letters from LEADS_DLQ for good? [y/N] ")
	require.Contains(t, out, "Nothing deleted.")
	require.Equal(t, 3, b.dlqCount(t))

	out, _, err = b.cli(t, "", "dlq", "purge", "--class", "invalid_event")
	require.Error(t, err, "end of input is no answer: no one is there to confirm")
	require.Equal(t, 2, exitCode(err))
	require.ErrorContains(t, err, "add --yes")
	require.NotContains(t, out, "Nothing deleted.")
	require.Equal(t, 3, b.dlqCount(t))

	out, _, err = b.cli(t, "y\n", "dlq", "purge", "--class", "invalid_event")
	require.NoError(t, err)
	require.Contains(t, out, "Deleted 2 dead letters.")
	require.Equal(t, 1, b.dlqCount(t))

	out, _, err = b.cli(t, "", "dlq", "purge", "--all", "--yes")
	require.NoError(t, err)
	require.Equal(t, "Deleted 1 dead letter.\n", out)
	require.Equal(t, 0, b.dlqCount(t))

	_, _, err = b.cli(t, "", "dlq", "purge")
	require.Equal(t, 2, exitCode(err))
}

func TestDLQStatsCountsByWorkflowAndClass(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, nil, `{}`)
	b.deadLetter(t, "signup", outcome.Permanent, 2, nil, `{}`)
	b.deadLetter(t, "import", outcome.Mapping, 3, nil, `{}`)

	out, _, err := b.cli(t, "", "dlq", "stats", "--json")
	require.NoError(t, err)
	var got map[string]map[string]int
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, map[string]map[string]int{"signup": {"permanent": 2}, "import": {"mapping": 1}}, got)

	out, _, err = b.cli(t, "", "dlq", "stats")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Len(t, lines, 4, out)
	require.Regexp(t, `WORKFLOW\s+INVALID_EVENT\s+MAPPING\s+VALIDATION\s+PERMANENT\s+EXHAUSTED\s+MAX_DELIVERIES\s+TOTAL`, lines[0])
	require.Regexp(t, `import\s+0\s+1\s+0\s+0\s+0\s+0\s+1`, lines[1])
	require.Regexp(t, `signup\s+0\s+0\s+0\s+2\s+0\s+0\s+2`, lines[2])
	require.Regexp(t, `total\s+0\s+1\s+0\s+2\s+0\s+0\s+3`, lines[3])
}

func TestDLQOnAMissingStreamSaysHowToGetOne(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	_, _, err := b.cli(t, "", "dlq", "list", "--stream", "OTHER")
	require.ErrorContains(t, err, "there is no stream OTHER on the NATS server at")
	require.ErrorContains(t, err, "Start 'kustomer-sync run' first")
	require.Equal(t, 1, exitCode(err))
}

func TestDLQHelpShowsExamples(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"dlq", "replay", "--help"}, strings.NewReader(""), &out, io.Discard))
	require.Contains(t, out.String(), "kustomer-sync dlq replay --all --dry-run")
	require.Contains(t, out.String(), "--rate")
}

func TestParseSinceReadsDurationsDaysAndTimes(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"90m":                  now.Add(-90 * time.Minute),
		"24h":                  now.Add(-24 * time.Hour),
		"7d":                   now.Add(-7 * 24 * time.Hour),
		"2025-03-01T08:00:00Z": time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		require.NoError(t, err, in)
		require.True(t, want.Equal(got), "%s: got %v", in, got)
	}
	got, err := parseSince("2025-03-01", now)
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 3, 1, 0, 0, 0, 0, time.Local), got)
	_, err = parseSince("-1h", now)
	require.Error(t, err)
}

func TestDLQListShowsFailedItemsAsIndexesNotACount(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "batch", outcome.Validation, 1, []int{0}, `{"leads":[]}`)
	b.deadLetter(t, "batch", outcome.Validation, 2, []int{0, 3, 4, 5}, `{"leads":[]}`)
	var many []int
	for i := range 5000 {
		many = append(many, 2*i)
	}
	b.deadLetter(t, "batch", outcome.Validation, 3, many, `{"leads":[]}`)

	out, _, err := b.cli(t, "", "dlq", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	require.Regexp(t, `^1\s+batch\s+validation\s+#0\s+2\s`, lines[1], "item 0, not a count of 0")
	require.Regexp(t, `^2\s+batch\s+validation\s+#0,#3-5\s+2\s`, lines[2])
	require.Regexp(t, `^3\s+batch\s+validation\s+#0,#2,#4,#6,#8,#10,#12,… \(5000 items\)\s+2\s`, lines[3])

	out, _, err = b.cli(t, "", "dlq", "show", "2")
	require.NoError(t, err)
	require.Regexp(t, `Failed items\s+#0,#3-5 \(4 items\)`, out)
	out, _, err = b.cli(t, "", "dlq", "show", "3")
	require.NoError(t, err)
	require.Contains(t, out, "#9996,#9998 (5000 items)", "show lists every item")
}

func TestDLQReplayOrPurgeOfAnIDThatNeverExistedExitsOneNamingIt(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, nil, `{"n":1}`)
	out, _, err := b.cli(t, "", "dlq", "replay", "999")
	require.EqualError(t, err, "dlq: no entry 999 in LEADS_DLQ: its entries go up to 1 (see 'kustomer-sync dlq list')")
	require.Equal(t, 1, exitCode(err))
	require.Empty(t, out)
	require.Equal(t, uint64(0), b.count(t, b.leads))

	_, _, err = b.cli(t, "", "dlq", "replay", "1", "999")
	require.ErrorIs(t, err, dlq.ErrNotFound)
	require.Equal(t, uint64(0), b.count(t, b.leads), "nothing replayed when one id is wrong")

	_, _, err = b.cli(t, "", "dlq", "purge", "999", "--yes")
	require.ErrorContains(t, err, "no entry 999")
	require.Equal(t, 1, exitCode(err))
	require.Equal(t, 1, b.dlqCount(t))

	// Replayed once: naming it again says it is gone, and is no error.
	_, _, err = b.cli(t, "", "dlq", "replay", "1")
	require.NoError(t, err)
	out, _, err = b.cli(t, "", "dlq", "replay", "1")
	require.NoError(t, err)
	require.Equal(t, "Entry 1 is already gone (replayed or purged before).\nNothing to replay.\n", out)
}

func TestDLQReplayAndPurgePrintJSON(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, []int{1}, `{"n":1}`)
	b.deadLetter(t, "signup", outcome.Permanent, 2, nil, `{"n":2}`)
	b.deadLetter(t, "signup", outcome.Permanent, 3, nil, `{"n":3}`)

	out, _, err := b.cli(t, "", "dlq", "replay", "1", "--json")
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, false, got["dry_run"])
	require.Equal(t, 1.0, got["replayed"])
	require.Equal(t, 0.0, got["already_replayed"])
	require.Equal(t, []any{}, got["kept"])
	require.Equal(t, []any{}, got["gone"])
	require.Len(t, got["entries"], 1)
	require.Equal(t, 1.0, got["entries"].([]any)[0].(map[string]any)["id"])

	out, _, err = b.cli(t, "", "dlq", "replay", "1", "2", "--dry-run", "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, true, got["dry_run"])
	require.Equal(t, []any{1.0}, got["gone"])
	require.Len(t, got["entries"], 1)

	_, _, err = b.cli(t, "", "dlq", "purge", "2", "--json")
	require.Equal(t, 2, exitCode(err), "no prompt in JSON mode: --yes is required")
	out, _, err = b.cli(t, "", "dlq", "purge", "2", "3", "--yes", "--json")
	require.NoError(t, err)
	require.JSONEq(t, `{"deleted":2,"ids":[2,3]}`, out)
	out, _, err = b.cli(t, "", "dlq", "purge", "--all", "--yes", "--json")
	require.NoError(t, err)
	require.JSONEq(t, `{"deleted":0,"ids":[]}`, out)
}

func TestDLQReplayOfAnEntryWhoseWorkflowIsGoneKeepsItSaysWhyAndExitsOne(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "renamed", outcome.Permanent, 1, nil, `{"n":1}`)
	b.deadLetter(t, "signup", outcome.Permanent, 2, nil, `{"n":2}`)

	out, _, err := b.cli(t, "", "dlq", "replay", "--all", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "Would keep entry 1 (workflow renamed)")
	require.Contains(t, out, "Dry run: would replay 1 entry")

	out, _, err = b.cli(t, "", "dlq", "replay", "--all")
	require.ErrorIs(t, err, leads.ErrNoWorkflow)
	require.Equal(t, 1, exitCode(err))
	require.Equal(t, "Kept entry 1 (workflow renamed): leads: workflow \"renamed\" no longer reads leads.renamed: stream LEADS has no consumer ksync-renamed for it (workflows reading it now: none); restore the workflow, or purge the entry\nReplayed 1 entry.\n", out)
	require.Equal(t, uint64(1), b.count(t, b.leads), "only the entry whose workflow exists")
	_, err = b.store.Get(context.Background(), 1)
	require.NoError(t, err, "the entry is kept")

	out, _, err = b.cli(t, "", "dlq", "replay", "1", "--json")
	require.Error(t, err)
	var got struct {
		Kept []struct {
			ID       uint64 `json:"id"`
			Workflow string `json:"workflow"`
			Reason   string `json:"reason"`
		} `json:"kept"`
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Len(t, got.Kept, 1)
	require.Equal(t, "renamed", got.Kept[0].Workflow)
	require.Contains(t, got.Kept[0].Reason, "no consumer ksync-renamed")
	require.NotEmpty(t, got.Error)
}

func TestConcurrentDLQReplaysOfTheSameEntryAllExitZero(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, nil, `{"n":1}`)
	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, _, err := b.cli(t, "", "dlq", "replay", "1")
			errs <- err
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	require.Equal(t, uint64(1), b.count(t, b.leads))
	require.Equal(t, 0, b.dlqCount(t))
}

func TestDLQShowSaysAnEntryCameFromAReplayAndItsHistory(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	r := dlq.Record{
		Workflow: "signup", Class: outcome.Permanent, Error: "kustomer: 422", Attempts: 1, Subject: "leads.signup",
		StreamSeq: 9, MsgID: "lead-42", Run: "LEADS-9-1-signup", LastFailure: time.Now(), Payload: []byte(`{}`),
	}
	r = r.ApplyReplay(&dlq.Replay{Entry: 3, Count: 2, Attempts: 6, OriginalRun: "LEADS-1-1-signup"})
	require.NoError(t, dlq.Publish(context.Background(), b.js, dlq.Subject("signup"), r))
	out, _, err := b.cli(t, "", "dlq", "show", "1")
	require.NoError(t, err)
	require.Regexp(t, `Run\s+LEADS-9-1-signup\n`, out)
	require.Regexp(t, `Replay of\s+entry 3 \(replay 2 of the event; 6 attempts before it\)`, out)
	require.Regexp(t, `Original run\s+LEADS-1-1-signup`, out)
	out, _, err = b.cli(t, "", "dlq", "show", "1", "--json")
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, 3.0, got["replayed_from"])
	require.Equal(t, 6.0, got["prior_attempts"])
}

func TestDLQShowReadsAPayloadKeptInTheObjectStoreByteForByte(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	nc, err := nats.Connect(b.url)
	require.NoError(t, err)
	defer nc.Close()
	// Just below the server's max_payload, and not JSON: no headers fit
	// beside it.
	payload := []byte("\x00" + strings.Repeat("é", int(nc.MaxPayload()-200)/2) + "\r\n")
	require.NoError(t, dlq.Publish(context.Background(), b.js, dlq.Subject("signup"), dlq.Record{
		Workflow: "signup", Class: outcome.Validation, Error: "mapping: name: too long", Subject: "leads.signup",
		StreamSeq: 7, Items: []int{0}, Payload: payload,
	}))

	out, _, err := b.cli(t, "", "dlq", "show", "1", "--payload")
	require.NoError(t, err)
	require.True(t, bytes.Equal(payload, []byte(out)), "byte for byte")

	out, _, err = b.cli(t, "", "dlq", "show", "1")
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf("Payload (%d bytes)", len(payload)))
	require.Regexp(t, `Ksync-Object: dlq\.`+dlq.StreamDefault+`\.ksync-dlq-signup-7-validation-`, out)

	out, _, err = b.cli(t, "", "dlq", "show", "1", "--json")
	require.NoError(t, err)
	var v struct {
		Object  string `json:"object"`
		Payload string `json:"payload"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.NotEmpty(t, v.Object)
	require.Equal(t, string(payload), v.Payload)
}

// A script or cron job has no terminal to answer on: without --yes, purge
// deletes nothing, asks nothing, and exits non-zero naming --yes.
func TestDLQPurgeWithoutYesAndWithoutATerminalFailsAndSaysYesIsNeeded(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.InvalidEvent, 1, nil, `not json`)
	stdin, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer stdin.Close()
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"dlq", "purge", "--all", "--nats-url", b.url}, stdin, &out, &errOut)
	require.Error(t, err)
	require.Equal(t, 2, exitCode(err))
	require.ErrorContains(t, err, "stdin is not a terminal")
	require.ErrorContains(t, err, "add --yes")
	require.NotContains(t, out.String(), "[y/N]", "no prompt no one can answer")
	require.Equal(t, 1, b.dlqCount(t))
}
