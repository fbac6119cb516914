package worker

import (
	"bytes"
	"cmp"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// testAPIKey is the key every test worker uses; no log line may contain it.
const testAPIKey = "sk-test-7f3a9c0e5b1d4a2f8e6c"

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is a worker against a real embedded NATS server and the Kustomer
// sandbox over HTTP.
type harness struct {
	t      testing.TB
	nats   *natstest.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	sb     *kustomertest.Server
	worker *Worker
	runs   *runlog.Log
	logs   *syncBuffer
	opts   harnessOptions
	// metrics holds the metrics of the harness's workers, and theirs only.
	metrics *prometheus.Registry
}

// start runs a worker with the given workflow YAML (default: the built-in
// config); stopWorker stops it, so a test can restart with a fixed config.
func (h *harness) start(config string) {
	h.t.Helper()
	cfg := mapping.DefaultConfig()
	if config != "" {
		var err error
		cfg, err = mapping.Parse("test.yaml", []byte(config))
		require.NoError(h.t, err)
	}
	wcfg := Config{
		Conn:          h.nc,
		JetStream:     h.js,
		Workflows:     cfg.Workflows,
		Kustomer:      kustomer.Config{BaseURL: h.sb.URL, APIKey: testAPIKey, Timeout: 2 * time.Second, OnRequest: h.opts.onRequest},
		WrapKustomer:  h.opts.wrap,
		RatePerMinute: cmp.Or(h.opts.rate, 60000),
		Logger:        zerolog.New(h.logs).Level(zerolog.DebugLevel),
		ReplicaID:     "test-replica",
		Registerer:    h.metrics,
	}
	if h.opts.worker != nil {
		h.opts.worker(&wcfg)
	}
	w, err := New(wcfg)
	require.NoError(h.t, err)
	require.NoError(h.t, w.Start(context.Background()))
	h.worker = w
	h.t.Cleanup(h.stopWorker)
}

func (h *harness) stopWorker() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = h.worker.Stop(ctx)
}

type harnessOptions struct {
	config  string                  // workflow YAML; default: the built-in config
	sandbox sandbox.Config          // the sandbox's settings
	wrap    func(Kustomer) Kustomer // replaces what the worker calls
	worker  func(*Config)           // adjusts the worker's config
	nats    func(*server.Options)   // adjusts the NATS server's options
	rate    int                     // the limiter's budget per minute; default 60000
	// before, when set, runs once NATS and the sandbox are up and before
	// the first worker starts (to publish a backlog, say).
	before func(*harness)
	// onRequest is the client's kustomer.Config.OnRequest.
	onRequest func(kustomer.RequestInfo)
}

func setup(t testing.TB, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}, metrics: prometheus.NewRegistry()}
	h.nats = natstest.StartOpts(t, t.TempDir(), -1, opts.nats)
	h.nc, h.js = h.nats.Connect(t)
	if opts.sandbox.APIKey == "" {
		opts.sandbox.APIKey = testAPIKey
	}
	h.sb = kustomertest.New(t, opts.sandbox)
	h.opts = opts
	if opts.before != nil {
		opts.before(h)
	}
	h.start(opts.config)
	var err error
	h.runs, err = runlog.New(context.Background(), h.js, runlog.Config{})
	require.NoError(t, err)
	return h
}

// publish puts an event on the leads stream and returns its stream sequence.
func (h *harness) publish(subject, msgID, body string) uint64 {
	h.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	ack, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(h.t, err)
	return ack.Sequence
}

// waitRun polls the run log until the event at seq has a finished run.
func (h *harness) waitRun(seq uint64) runlog.Record {
	h.t.Helper()
	return h.waitRunWithin(seq, 20*time.Second)
}

// waitRunWithin is waitRun giving up after limit.
func (h *harness) waitRunWithin(seq uint64, limit time.Duration) runlog.Record {
	h.t.Helper()
	var found runlog.Record
	require.Eventually(h.t, func() bool {
		recs, err := h.runs.List(context.Background(), runlog.Filter{})
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.StreamSeq == seq {
				found = r
				return true
			}
		}
		return false
	}, limit, 20*time.Millisecond, "no run record for stream sequence %d\nlogs:\n%s", seq, h.logs.String())
	return found
}

// waitIdle polls until the workflow's consumer has nothing pending or unacknowledged.
func (h *harness) waitIdle(workflow string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+workflow)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 20*time.Second, 20*time.Millisecond, "consumer %s never became idle\nlogs:\n%s", workflow, h.logs.String())
}

// requireNoSecretInLogs checks that the API key appears in no log line, run
// record or dead letter.
func (h *harness) requireNoSecretInLogs() {
	h.t.Helper()
	require.NotContains(h.t, h.logs.String(), testAPIKey)
	require.NotContains(h.t, strings.ToLower(h.logs.String()), "bearer")
	ctx := context.Background()
	for _, stream := range []string{runlog.StreamDefault, dlq.StreamDefault} {
		st, err := h.js.Stream(ctx, stream)
		require.NoError(h.t, err)
		info, err := st.Info(ctx)
		require.NoError(h.t, err)
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted
			}
			require.NotContains(h.t, string(m.Data), testAPIKey, "%s message %d", stream, seq)
			for k, vs := range m.Header {
				for _, v := range vs {
					require.NotContains(h.t, v, testAPIKey, "%s message %d header %s", stream, seq, k)
				}
			}
		}
	}
}

// leadConfig is a workflow "default" on leads.> creating a customer from
// the event's id and name, with settings (YAML lines of the workflow, e.g.
// a retry policy) added.
func leadConfig(settings ...string) string {
	var b strings.Builder
	b.WriteString("workflows:\n  - name: default\n    subject: \"leads.>\"\n")
	for _, line := range settings {
		b.WriteString("    " + line + "\n")
	}
	b.WriteString("    inputs:\n      externalId: \"{{trigger.id}}\"\n      name: \"{{trigger.name}}\"\n")
	return b.String()
}

// testWorkflow is the workflow config testdata/workflows/<name>.yaml, at the
// top of the repository, where the configs the tests share are kept.
func testWorkflow(name string) string { return mappingtest.Workflow(name) }

// deadReplicaSent plays a replica that claimed the leads ext-<name> of
// names, sent them in one bulk job (its request recorded as sent at sent),
// and died: its claims are a minute old, their leases ended. It returns
// the job.
func (h *harness) deadReplicaSent(names []string, sent time.Time) *kustomer.BulkJob {
	h.t.Helper()
	ctx := context.Background()
	var died time.Duration
	dead, err := ledger.Open(ctx, h.js, ledger.Config{}, "replica-dead", func() time.Time { return time.Now().Add(-died) })
	require.NoError(h.t, err)
	died = time.Minute // after Open, which measures the clock against the server's
	client, err := kustomer.New(kustomer.Config{BaseURL: h.sb.URL, APIKey: testAPIKey})
	require.NoError(h.t, err)
	token := ledger.NewBatchToken()
	var items []kustomer.BulkItem
	for _, n := range names {
		key := ledger.Key("", "ext-"+n)
		_, err := dead.Claim(ctx, key, token)
		require.NoError(h.t, err)
		items = append(items, kustomer.BulkItem{Ref: bulkRef(key), Body: map[string]any{"externalId": "ext-" + n, "name": n}})
	}
	job, err := client.CreateCustomersBulk(ctx, items)
	require.NoError(h.t, err)
	require.NoError(h.t, dead.BatchSent(ctx, token, job.ID, len(items), sent))
	return job
}
