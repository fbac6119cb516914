package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// writeRun writes recs to the run log.
func (b cliBundle) writeRun(t *testing.T, recs ...runlog.Record) {
	t.Helper()
	l, err := runlog.New(context.Background(), b.js, runlog.Config{})
	require.NoError(t, err)
	for _, r := range recs {
		require.NoError(t, l.Write(context.Background(), r))
	}
}

func writeRuns(t *testing.T, b cliBundle) {
	t.Helper()
	start := time.Now().Add(-10 * time.Minute)
	runs := []runlog.Record{
		{ID: "signup-1-1", Workflow: "signup", EventID: "lead-1", Subject: "leads.signup", StreamSeq: 1,
			Started: start, Ended: start.Add(120 * time.Millisecond), Status: runlog.Succeeded,
			Items: []runlog.Item{{Index: 0, Outcome: outcome.Created, CustomerID: "aaaaaaaaaaaaaaaaaaaaaaaa", Attempts: 1}}},
		{ID: "signup-2-1", Workflow: "signup", EventID: "lead-2", Subject: "leads.signup", StreamSeq: 2,
			Started: start.Add(time.Minute), Ended: start.Add(time.Minute + time.Second), Status: runlog.Partial,
			Items: []runlog.Item{
				{Index: 0, Outcome: outcome.Created, CustomerID: "bbbbbbbbbbbbbbbbbbbbbbbb", Attempts: 1},
				{Index: 1, Outcome: outcome.Exhausted, Attempts: 5, Error: "kustomer: create: 503 unavailable"},
			}},
		{ID: "import-3-1", Workflow: "import", EventID: "lead-3", Subject: "leads.import", StreamSeq: 3,
			Started: start.Add(2 * time.Minute), Ended: start.Add(2 * time.Minute), Status: runlog.DeadLettered,
			Error: "mapping: {{trigger.nme}}: no such field"},
	}
	b.writeRun(t, runs...)
}

func TestRunsListPrintsNewestFirstAndFilters(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	writeRuns(t, b)

	out, _, err := b.cli(t, "", "runs", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	require.Regexp(t, `^ID\s+WORKFLOW\s+STATUS\s+ITEMS\s+STARTED\s+TOOK\s+ERROR$`, lines[0])
	require.Regexp(t, `^import-3-1\s+import\s+dead_lettered\s+0/0\s+.*mapping: \{\{trigger.nme\}\}`, lines[1])
	require.Regexp(t, `^signup-2-1\s+signup\s+partial\s+1/2\s+.*\s1s\s+#1: kustomer: create: 503 unavailable$`, lines[2])
	require.Regexp(t, `^signup-1-1\s+signup\s+succeeded\s+1/1\s+.*\s120ms\s*$`, lines[3])

	out, _, err = b.cli(t, "", "runs", "list", "--workflow", "signup", "--status", "partial", "--json")
	require.NoError(t, err)
	var got []runlog.Record
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got, 1)
	require.Equal(t, "signup-2-1", got[0].ID)
	require.Equal(t, "bbbbbbbbbbbbbbbbbbbbbbbb", got[0].Items[0].CustomerID)

	out, _, err = b.cli(t, "", "runs", "list", "--limit", "1")
	require.NoError(t, err)
	require.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 2)

	out, _, err = b.cli(t, "", "runs", "list", "--since", "1m", "--json")
	require.NoError(t, err)
	require.Equal(t, "[]\n", out)

	_, _, err = b.cli(t, "", "runs", "list", "--status", "great")
	require.Equal(t, 2, exitCode(err))
}

func TestRunsShowPrintsTheRunAndItsItems(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	writeRuns(t, b)
	out, _, err := b.cli(t, "", "runs", "show", "signup-2-1")
	require.NoError(t, err)
	require.Regexp(t, `Status\s+partial`, out)
	require.Regexp(t, `Event\s+lead-2`, out)
	require.Regexp(t, `0\s+created\s+bbbbbbbbbbbbbbbbbbbbbbbb\s+1\s+-\s+-`, out)
	require.Regexp(t, `1\s+failed\s+-\s+5\s+exhausted\s+kustomer: create: 503 unavailable`, out)

	_, _, err = b.cli(t, "", "runs", "show", "nope")
	require.ErrorIs(t, err, runlog.ErrNotFound)
}

func TestRunsOnAMissingStreamFails(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	_, _, err := b.cli(t, "", "runs", "list", "--stream", "NOPE")
	require.ErrorContains(t, err, "NOPE")
}

func TestRunsListShowsWhyAFailedRunFailed(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	writeRuns(t, b)
	start := time.Now().Add(-time.Minute)
	b.writeRun(t, runlog.Record{
		ID: "batch-4-1", Workflow: "batch", StreamSeq: 4, Started: start, Ended: start.Add(time.Second), Status: runlog.Failed,
		Items: []runlog.Item{
			{Index: 0, Outcome: outcome.Validation, Attempts: 1, Error: `mapping: emails[0].email: "x" is not an email address`},
			{Index: 1, Outcome: outcome.Validation, Attempts: 1, Error: `mapping: emails[0].email: "y" is not an email address`},
		},
	})

	out, _, err := b.cli(t, "", "runs", "list")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Regexp(t, `^batch-4-1\s+batch\s+failed\s+0/2\s+.*\s#0 and 1 more: mapping: emails\[0\]\.email: "x" is not an`, lines[1])
	require.Regexp(t, `^signup-2-1\s+signup\s+partial\s+1/2\s+.*\s#1: kustomer: create: 503 unavailable$`, lines[3])
}

func TestRunsListPutsTheLatestStartFirstWhateverOrderRunsEnded(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	start := time.Now().Add(-time.Hour)
	// A long Loop event started first and ended last: its record is written
	// after the others'.
	for _, r := range []struct {
		id    string
		start time.Duration
	}{{"short-b", 2 * time.Minute}, {"short-c", 3 * time.Minute}, {"long-a", 0}} {
		b.writeRun(t, runlog.Record{
			ID: r.id, Workflow: "batch", Started: start.Add(r.start), Ended: start.Add(10 * time.Minute), Status: runlog.Succeeded,
		})
	}
	for _, args := range [][]string{{"runs", "list"}, {"runs", "list", "--limit", "0"}, {"runs", "list", "--since", "2h"}} {
		out, _, err := b.cli(t, "", args...)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 4, args)
		for i, id := range []string{"short-c", "short-b", "long-a"} {
			require.True(t, strings.HasPrefix(lines[i+1], id+" "), "%v: line %d is %q, want %s", args, i+1, lines[i+1], id)
		}
	}
}

func TestRunsShowLinksAReplayToItsDeadLetterAndEarlierRuns(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	now := time.Now()
	b.writeRun(t, runlog.Record{
		ID: "LEADS-9-1", Workflow: "signup", EventID: "lead-42", Subject: "leads.signup", StreamSeq: 9,
		Started: now, Ended: now, Status: runlog.Succeeded, Replay: true,
		ReplayOf: &runlog.Replay{DeadLetter: 7, Stream: "LEADS_DLQ", Run: "LEADS-5-1", OriginalRun: "LEADS-1-1", Count: 2, Attempts: 6},
	})
	out, _, err := b.cli(t, "", "runs", "show", "LEADS-9-1")
	require.NoError(t, err)
	require.Regexp(t, `Event\s+lead-42\n`, out)
	require.Regexp(t, `Replay of\s+dead letter 7 in LEADS_DLQ \(replay 2 of the event; 6 attempts before it\)`, out)
	require.Regexp(t, `Failed run\s+LEADS-5-1`, out)
	require.Regexp(t, `Original run\s+LEADS-1-1`, out)
}

func TestRunsShowPrintsEachItemsBulkJobAndWhatAnUpdateDidNotSend(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	start := time.Now().Add(-time.Minute)
	b.writeRun(t, runlog.Record{
		ID: "bulk-5-1", Workflow: "bulk", StreamSeq: 5, Started: start, Ended: start.Add(time.Second), Status: runlog.Succeeded,
		Items: []runlog.Item{
			{Index: 0, Outcome: outcome.Created, CustomerID: "cccccccccccccccccccccccc", Attempts: 1, BulkJob: "job-7"},
			{Index: 1, Outcome: outcome.Updated, CustomerID: "dddddddddddddddddddddddd", Attempts: 1, BulkJob: "job-7",
				Dropped: []string{"externalId: m-2 (the customer, found by another match key, keeps its own: m-1)"}},
		},
	})
	out, _, err := b.cli(t, "", "runs", "show", "bulk-5-1")
	require.NoError(t, err)
	require.Regexp(t, `INDEX\s+OUTCOME\s+CUSTOMER\s+ATTEMPTS\s+BULK JOB\s+CLASS\s+ERROR`, out)
	require.Regexp(t, `0\s+created\s+cccccccccccccccccccccccc\s+1\s+job-7\s+-\s+-`, out)
	require.Contains(t, out, "item 1: not sent by the update: externalId: m-2 (the customer, found by another match key, keeps its own: m-1)")
	require.NotContains(t, out, "10 per list", "the reason is the entry's own")
}
