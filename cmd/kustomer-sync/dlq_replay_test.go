package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// `dlq replay` waits for the replayed event's run and prints its id and
// status; a replay that fails again exits 1, one that succeeds exits 0.
func TestDLQReplayPrintsTheReplayedEventsRunAndExitsOneWhenItFailsAgain(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-replay"})
	config := filepath.Join(t.TempDir(), "workflows.yaml")
	startWorker := func(field string) *inProcessRun {
		require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, dashboardConfig, field), 0o600))
		r := startRun(t, "--nats-url", srv.ClientURL(), "--kustomer-base-url", sb.URL, "--kustomer-api-key-file", writeKey(t, "sk-replay"),
			"--config", config, "--admin-addr", "off", "--replica-id", "replay-"+field)
		// Replay checks a live replica runs the workflow: wait for its heartbeat.
		require.Eventually(t, func() bool {
			rep, err := tryStatus(t, srv.ClientURL())
			if err != nil {
				return false
			}
			for _, rs := range rep.Replicas {
				for _, w := range rs.Workflows {
					if rs.Replica == "replay-"+field && w.Workflow == "signup" && w.State == "running" {
						return true
					}
				}
			}
			return false
		}, 30*time.Second, 20*time.Millisecond, "replica replay-%s never ran workflow signup", field)
		return r
	}
	// The workflow reads the id from a field the event lacks: it fails
	// validation and is dead-lettered.
	r := startWorker("lead_id")
	m := nats.NewMsg("signups.web")
	m.Data = []byte(`{"id":"lead-7","name":"Ann","email":"ann@example.com"}`)
	m.Header.Set(nats.MsgIdHdr, "event-7")
	_, err := js.PublishMsg(ctx, m)
	require.NoError(t, err)
	entry := func() dlq.Record {
		t.Helper()
		var dead []dlq.Record
		require.Eventually(t, func() bool {
			store, err := dlq.OpenStore(ctx, js, dlq.StreamDefault)
			if err != nil {
				return false
			}
			dead, err = store.List(ctx, dlq.Filter{All: true})
			return err == nil && len(dead) == 1
		}, 30*time.Second, 20*time.Millisecond, r.stderr.String())
		return dead[0]
	}
	first := entry()

	// Replayed unchanged, it fails again: the run says so, and exit 1.
	out, _, err := cli(t, "", "dlq", "replay", fmt.Sprint(first.ID), "--nats-url", srv.ClientURL())
	require.Error(t, err, out)
	require.Equal(t, 1, exitCode(err))
	require.ErrorContains(t, err, "1 replayed event failed again")
	require.Regexp(t, fmt.Sprintf(`Replayed 1 entry\.\nEntry %d \(workflow signup\): run \S+ (failed|dead_lettered), 0/\d items: .*externalId.*\.\n$`, first.ID), out)
	second := entry()
	require.NotEqual(t, first.ID, second.ID, "the failed replay's new dead letter")
	r.stop()

	// Fixed, the replay succeeds: its run id, status and exit 0, in JSON too.
	r = startWorker("id")
	out, _, err = cli(t, "", "dlq", "replay", fmt.Sprint(second.ID), "--json", "--nats-url", srv.ClientURL())
	require.NoError(t, err, out)
	var got replayView
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Len(t, got.Runs, 1, out)
	require.Equal(t, second.ID, got.Runs[0].Entry)
	require.Equal(t, "signup", got.Runs[0].Workflow)
	require.Equal(t, "succeeded", got.Runs[0].Status)
	require.Equal(t, 1, got.Runs[0].Done)
	require.NotEmpty(t, got.Runs[0].Run)
	runOut, _, err := cli(t, "", "runs", "show", got.Runs[0].Run, "--nats-url", srv.ClientURL())
	require.NoError(t, err)
	require.Contains(t, runOut, fmt.Sprintf("dead letter %d", second.ID), "the printed run is the replay's")
	require.Len(t, sb.Sandbox.Customers(), 1)
	r.stop()
}

// --no-wait republishes and returns; a run that does not end within --wait
// is reported pending and exits 1.
func TestDLQReplayNoWaitReturnsAtOnceAndAWaitThatRunsOutExitsOne(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	b.deadLetter(t, "signup", outcome.Permanent, 1, nil, `{"n":1}`)
	b.deadLetter(t, "signup", outcome.Permanent, 2, nil, `{"n":2}`)
	// A run log, and no worker to write the replay's run.
	_, err := runlog.New(context.Background(), b.js, runlog.Config{})
	require.NoError(t, err)

	out, _, err := b.cli(t, "", "dlq", "replay", "1", "--no-wait")
	require.NoError(t, err)
	require.Equal(t, "Replayed 1 entry.\n", out)

	out, _, err = b.cli(t, "", "dlq", "replay", "2", "--wait", "300ms")
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	require.ErrorContains(t, err, "1 replayed event without an outcome after 300ms")
	require.Equal(t, "Replayed 1 entry.\nEntry 2 (workflow signup): no run ended within 300ms; follow it with: kustomer-sync runs list --workflow signup.\n", out)

	_, _, err = b.cli(t, "", "dlq", "replay", "2", "--wait", "1s", "--no-wait")
	require.Equal(t, 2, exitCode(err), "--wait and --no-wait together")
}
