package worker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func newTestWorker(t *testing.T, js jetstream.JetStream, srv *natstest.Server, config string) (*Worker, error) {
	t.Helper()
	nc, _ := srv.Connect(t)
	cfg, err := mapping.Parse("test.yaml", []byte(config))
	require.NoError(t, err)
	sb := kustomertest.New(t, sandbox.Config{})
	return New(Config{Conn: nc, JetStream: js, Workflows: cfg.Workflows, Kustomer: kustomer.Config{BaseURL: sb.URL, APIKey: "k"}, Logger: zerolog.Nop()})
}

func TestAnOperatorsStreamThatDoesNotCoverTheSubjectIsAClearError(t *testing.T) {
	t.Parallel()
	srv, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.web.>"}})
	ctx := context.Background()

	w, err := newTestWorker(t, js, srv, "workflows:\n  - name: all\n    subject: \"leads.>\"\n    inputs: {name: \"{{trigger.name}}\"}\n")
	require.NoError(t, err)
	err = w.Start(ctx)
	require.EqualError(t, err, `leads: stream LEADS (created by an operator, not by kustomer-sync) captures leads.web.>, not subject leads.> of workflow "all": events published there are stored nowhere. Add the subject to the stream (nats stream edit LEADS --subjects "leads.>"), or give the workflow a subject the stream captures`)
}

func TestAnOperatorsStreamThatCoversTheSubjectIsUsedAsItIs(t *testing.T) {
	t.Parallel()
	srv, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}, MaxAge: time.Hour})
	ctx := context.Background()

	w, err := newTestWorker(t, js, srv, "workflows:\n  - name: web\n    subject: \"leads.web\"\n    inputs: {name: \"{{trigger.name}}\"}\n")
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	t.Cleanup(func() { _ = w.Stop(ctx) })
	st, err := js.Stream(ctx, "LEADS")
	require.NoError(t, err)
	require.Equal(t, time.Hour, st.CachedInfo().Config.MaxAge, "the operator's settings are left alone")
	require.Empty(t, st.CachedInfo().Config.Metadata[leads.ManagedByKey])
}

func TestStopWaitsForEventsInFlightToFinish(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  loopConfig,
		sandbox: sandbox.Config{Latency: 50 * time.Millisecond},
	})
	ids := h.publishLoopEvents("drain", 4, 10)
	h.waitCreated(1, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, h.worker.Stop(ctx), "the drain finished within its deadline")
	// Whatever was fetched finished and was recorded; nothing is half-done:
	// every event either has a run record or is still pending, unacknowledged.
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	done := 0
	for _, r := range recs {
		require.Equal(t, runlog.Succeeded, r.Status)
		done += len(r.Items)
	}
	require.Equal(t, done, len(h.sb.Sandbox.Customers()), "every created customer belongs to a recorded run")

	// A new worker picks up the rest, and nothing is created twice.
	h.start(loopConfig)
	h.waitCreated(len(ids), 20*time.Second)
	h.waitIdle("batch")
	h.requireEachCreatedOnce(ids)
}

// The claims' lease runs on the workers' clock, which the test moves once the
// second replica is up: it waits out the first one's claims in virtual time.
// JetStream's redelivery after the ack wait stays real (see the outage test
// for why testing/synctest cannot drive a worker).
func TestStopPastItsDeadlineLeavesUnfinishedEventsForRedelivery(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	h := setup(t, harnessOptions{
		config:  loopConfig,
		sandbox: sandbox.Config{Latency: 200 * time.Millisecond},
		worker: func(c *Config) {
			c.AckWait = 2 * time.Second
			c.Ledger.Lease = 3 * time.Second // above the client's 2 s timeout
			c.Clock = clock
		},
	})
	ids := h.publishLoopEvents("hard", 2, 20)
	h.waitCreated(1, 10*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.worker.Stop(ctx), context.DeadlineExceeded)
	// The drain's end is logged before the worker says it stopped.
	msgs := h.logMessages()
	deadline, stopped := slices.Index(msgs, drainDeadlinePassed), slices.Index(msgs, "worker stopped")
	require.NotEqual(t, -1, deadline, "the passed drain deadline is logged")
	require.NotEqual(t, -1, stopped)
	require.Less(t, deadline, stopped, "drain deadline passed, then worker stopped")
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Empty(t, recs, "an interrupted event is not recorded half-way")

	// Another replica takes over: it must wait out the first one's claims and
	// then look up what the interrupted requests may have created.
	first := h.opts.worker
	h.opts.worker = func(c *Config) { first(c); c.ReplicaID = "second-replica" }
	h.start(loopConfig)
	require.True(t, advanceUntil(t, clock, time.Second, func() bool { return len(h.sb.Sandbox.CountByExternalID()) >= len(ids) }),
		"only %d of %d created\n%s", len(h.sb.Sandbox.CountByExternalID()), len(ids), lastLines(h.logs.String(), 30))
	h.waitIdle("batch")
	h.requireEachCreatedOnce(ids)
}
