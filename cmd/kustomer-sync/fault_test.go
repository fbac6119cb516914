package main

// Fault tests (issue 6): each drives real kustomer-sync processes against real
// NATS servers started in this test process and the Kustomer sandbox served
// from it, breaks something in the middle of a run, and then checks the
// sandbox's own record: every lead created exactly once, none missing,
// nothing dead-lettered.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

const (
	// faultWorkflow is the one workflow of the fault tests: a Loop over the
	// event's leads with the lead's id as externalId, so the idempotency key
	// is the externalId and an unknown outcome can be looked up.
	// Its config is testdata/workflows/faults.yaml.
	faultWorkflow = "faults"
	// faultAPIKey is the key the worker processes are given; the sandbox does
	// not check it.
	faultAPIKey = "sk-fault-test-key"
	// faultLatency is added to every sandbox request, so that a batch takes
	// long enough for a fault to land in its middle.
	faultLatency = 10 * time.Millisecond
	// faultDeadline bounds how long a run may take to complete after a fault.
	faultDeadline = 60 * time.Second
	// natsOutage is how long the NATS server stays down in the restart test:
	// longer than the JetStream client's default request timeout (5 s).
	natsOutage = 6 * time.Second
	// faultPoll is how often the tests look at the sandbox and the consumer.
	faultPoll = 25 * time.Millisecond
)

// runMainEnv, set to 1, makes the test binary run kustomer-sync's main
// instead of the tests: the fault tests start their worker processes from
// it, so no test waits for a `go build`, and under -race the workers run
// with the race detector too.
const runMainEnv = "KSYNC_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	// Every worker these tests start, in-process or as a process, serves its
	// admin server on a port of its own rather than all on the default.
	_ = os.Setenv("KSYNC_ADMIN_ADDR", "127.0.0.1:0")
	os.Exit(m.Run())
}

// workerBinary returns the program a worker process runs: this test binary,
// with runMainEnv set (see startWorker).
func workerBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	return exe
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// workerProc is one `kustomer-sync run` process.
type workerProc struct {
	id       string
	cmd      *exec.Cmd
	out      *lockedBuffer
	exited   chan struct{} // closed when the process has exited
	err      error         // its exit status, once exited is closed
	mu       sync.Mutex
	expected bool // the test ended it on purpose
}

// exitedUnexpectedly reports whether the process ended without the test
// asking it to.
func (p *workerProc) exitedUnexpectedly() bool {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.expected
	default:
		return false
	}
}

// kill ends the process with SIGKILL, as a crash or an OOM kill would, and
// waits for it to be gone.
func (p *workerProc) kill(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	p.expected = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// faultRun is the world of one fault test: a sandbox, a NATS URL, the worker
// processes and the leads published.
type faultRun struct {
	t        *testing.T
	sb       *kustomertest.Server
	started  time.Time
	config   string
	natsURL  string
	replicas int      // --stream-replicas
	args     []string // more flags for the workers
	env      []string // more environment variables for the workers
	procs    []*workerProc
	ids      []string // every lead's externalId, in publishing order
}

func newFaultRun(t *testing.T, natsURL string) *faultRun {
	t.Helper()
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, Latency: faultLatency})
	config := filepath.Join(t.TempDir(), "workflows.yaml")
	require.NoError(t, os.WriteFile(config, []byte(mappingtest.Workflow(faultWorkflow)), 0o600))
	return &faultRun{t: t, sb: sb, started: time.Now(), config: config, natsURL: natsURL, replicas: 1}
}

// startWorker starts a worker process named replicaID. Its ack wait (2 s) and
// claim lease (3 s) are short, so that the work of a killed process is taken
// over within seconds, as the flags allow in production. flags are added to
// the run's args for this worker only.
func (r *faultRun) startWorker(replicaID string, flags ...string) *workerProc {
	t := r.t
	t.Helper()
	cmd := exec.Command(workerBinary(t), "run",
		"--nats-url", r.natsURL,
		"--kustomer-base-url", r.sb.URL,
		"--config", r.config,
		"--replica-id", replicaID,
		"--stream-replicas", fmt.Sprint(r.replicas),
		"--ack-wait", "2s",
		"--kustomer-timeout", "2s",
		"--claim-lease", "3s",
		"--rate-per-minute", "60000",
		"--drain-timeout", "5s",
		"--log-format", "json",
		"--log-level", "info",
	)
	cmd.Args = append(append(cmd.Args, r.args...), flags...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "KUSTOMER_API_KEY="+faultAPIKey, "KSYNC_METRICS_ADDR=")
	cmd.Env = append(cmd.Env, r.env...)
	p := &workerProc{id: replicaID, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		p.mu.Lock()
		p.expected = true
		p.mu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	r.procs = append(r.procs, p)
	return p
}

// stopWorkers ends every running worker with SIGTERM, as an orchestrator
// would, and requires each to drain and exit cleanly.
func (r *faultRun) stopWorkers() {
	r.t.Helper()
	for _, p := range r.procs {
		select {
		case <-p.exited:
			continue
		default:
		}
		p.mu.Lock()
		p.expected = true
		p.mu.Unlock()
		require.NoError(r.t, p.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-p.exited:
			require.NoError(r.t, p.err, "worker %s did not exit cleanly on SIGTERM\n%s", p.id, r.logs())
		case <-time.After(15 * time.Second):
			r.t.Fatalf("worker %s did not exit within 15s of SIGTERM\n%s", p.id, r.logs())
		}
	}
}

// logs returns every worker process's output, for failure messages.
func (r *faultRun) logs() string {
	var b strings.Builder
	for _, p := range r.procs {
		out := p.out.String()
		const keep = 6000
		if len(out) > keep {
			out = "…" + out[len(out)-keep:]
		}
		fmt.Fprintf(&b, "--- worker %s (exit: %v) ---\n%s\n", p.id, p.exitState(), out)
	}
	return b.String()
}

func (p *workerProc) exitState() string {
	select {
	case <-p.exited:
		return fmt.Sprint(p.err)
	default:
		return "running"
	}
}

// requireWorkersAlive fails the test when a worker the test did not end has
// exited: a fault must never crash a worker.
func (r *faultRun) requireWorkersAlive() {
	r.t.Helper()
	for _, p := range r.procs {
		require.False(r.t, p.exitedUnexpectedly(), "worker %s exited on its own\n%s", p.id, r.logs())
	}
}

// waitStream waits until a worker has created the leads stream.
func (r *faultRun) waitStream(js jetstream.JetStream) {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.Consumer(ctx, leads.StreamDefault, leads.ConsumerPrefixDefault+faultWorkflow)
		return err == nil
	}, 20*time.Second, faultPoll, "the workers never created the stream and consumer\n%s", r.logs())
}

// publishLeads publishes events of perEvent leads each, numbered from first,
// with a Nats-Msg-Id per event. A publish that fails (a node just died) is
// retried with the same id, as a producer would; the stream de-duplicates it.
func (r *faultRun) publishLeads(js jetstream.JetStream, first, events, perEvent int) {
	r.t.Helper()
	type lead struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Email string `json:"email"`
	}
	for e := first; e < first+events; e++ {
		leads := make([]lead, perEvent)
		for i := range leads {
			id := fmt.Sprintf("%s-e%03d-i%02d", r.t.Name(), e, i)
			id = strings.ReplaceAll(id, "/", "-")
			leads[i] = lead{ID: id, Name: fmt.Sprintf("Lead %d.%d", e, i), Email: fmt.Sprintf("lead-%d-%d@example.com", e, i)}
			r.ids = append(r.ids, id)
		}
		body, err := json.Marshal(map[string]any{"leads": leads})
		require.NoError(r.t, err)
		m := nats.NewMsg(fmt.Sprintf("leads.batch.%d", e))
		m.Data = body
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("fault-event-%d", e))
		var lastErr error
		require.Eventually(r.t, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, lastErr = js.PublishMsg(ctx, m)
			return lastErr == nil
		}, 20*time.Second, faultPoll, "publish event %d: %v", e, lastErr)
	}
}

// waitCreated waits until the sandbox holds at least n customers: the point
// where a test breaks something "mid-run".
func (r *faultRun) waitCreated(n int) {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		return len(r.sb.Sandbox.Customers()) >= n
	}, faultDeadline, faultPoll/5, "never reached %d customers\n%s", n, r.logs())
	r.t.Logf("%s: %d of %d customers created: breaking something now", r.since(), len(r.sb.Sandbox.Customers()), len(r.ids))
}

func (r *faultRun) since() time.Duration { return time.Since(r.started).Round(time.Millisecond) }

// waitDone waits until every published lead has a customer and the
// workflow's consumer has nothing pending or unacknowledged.
func (r *faultRun) waitDone(js jetstream.JetStream) {
	r.t.Helper()
	var state string
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		counts := r.sb.Sandbox.CountByExternalID()
		missing := 0
		for _, id := range r.ids {
			if counts[id] == 0 {
				missing++
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, leads.StreamDefault, leads.ConsumerPrefixDefault+faultWorkflow)
		if err != nil {
			state = fmt.Sprintf("%d leads missing; consumer: %v", missing, err)
			return false
		}
		info, err := c.Info(ctx)
		if err != nil {
			state = fmt.Sprintf("%d leads missing; consumer info: %v", missing, err)
			return false
		}
		state = fmt.Sprintf("%d leads missing; %d pending, %d unacknowledged", missing, info.NumPending, info.NumAckPending)
		return missing == 0 && info.NumPending == 0 && info.NumAckPending == 0
	}, faultDeadline, faultPoll, "the run never completed: %s\n%s", &state, r.logs())
	st := r.sb.Sandbox.Stats()
	r.t.Logf("%s: done: %d customers, %d requests, %d look-ups", r.since(), len(r.sb.Sandbox.Customers()), st.Requests, st.Lookups)
}

// requireExactlyOnce checks the sandbox's record: one customer per published
// lead, none other, and nothing dead-lettered.
func (r *faultRun) requireExactlyOnce(js jetstream.JetStream) {
	r.t.Helper()
	want := make(map[string]bool, len(r.ids))
	for _, id := range r.ids {
		want[id] = true
	}
	got := r.sb.Sandbox.CountByExternalID()
	var dup, missing, extra []string
	for id := range want {
		switch n := got[id]; {
		case n == 0:
			missing = append(missing, id)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s ×%d", id, n))
		}
	}
	for id := range got {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	slices.Sort(dup)
	slices.Sort(missing)
	require.True(r.t, len(dup)+len(missing)+len(extra) == 0,
		"%d leads published, %d distinct externalIds created\nduplicates (%d): %v\nmissing (%d): %v\nunexpected (%d): %v\n%s",
		len(want), len(got), len(dup), dup, len(missing), missing, len(extra), extra, r.logs())
	require.Len(r.t, r.sb.Sandbox.Customers(), len(r.ids), "every customer carries one of the published externalIds")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := dlq.OpenStore(ctx, js, dlq.StreamDefault)
	require.NoError(r.t, err)
	dead, err := store.List(ctx, dlq.Filter{All: true})
	require.NoError(r.t, err)
	for _, d := range dead {
		r.t.Errorf("dead-lettered: class %s, items %v, error %q", d.Class, d.Items, d.Error)
	}
	require.Empty(r.t, dead, "nothing may be dead-lettered\n%s", r.logs())
}

func TestFaultWorkerKilledMidBatchThenRestartedCreatesEveryLeadOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())

	first := r.startWorker("fault-kill-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 20, 15)
	r.waitCreated(len(r.ids) * 3 / 10)
	first.kill(t)
	require.Less(t, len(r.sb.Sandbox.Customers()), len(r.ids), "the kill must land before the batch is done")

	r.startWorker("fault-kill-2") // a restarted process is a new replica
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}

func TestFaultNATSServerRestartedOnItsStoreMidRunLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())

	r.startWorker("fault-nats-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 20, 15)
	r.waitCreated(len(r.ids) * 3 / 10)

	p := srv.Port()
	srv.Shutdown()
	srv.WaitForShutdown()
	// The outage outlasts the client's 5 s request timeout, so ledger writes
	// and results in flight fail, not just wait; the worker must survive it.
	require.Never(t, func() bool {
		for _, p := range r.procs {
			if p.exitedUnexpectedly() {
				return true
			}
		}
		return false
	}, natsOutage, faultPoll, "a worker exited while NATS was down")
	require.Less(t, len(r.sb.Sandbox.Customers()), len(r.ids), "the outage must land before the batch is done")

	restarted := natstest.StartWith(t, srv.StoreDir, p)
	_, js = restarted.Connect(t)
	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}

func TestFaultClusterNodeKilledMidRunWithR3StreamsLosesNothing(t *testing.T) {
	t.Parallel()
	cl := natstest.StartCluster(t, 3)
	_, js := cl.Connect(t)
	r := newFaultRun(t, cl.ClientURLs())
	r.replicas = 3

	r.startWorker("fault-cluster-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 10, 15)
	r.waitCreated(len(r.ids) * 3 / 10)

	// Kill the node that leads the leads stream: the hardest node to lose.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, leads.StreamDefault)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.NotNil(t, info.Cluster)
	require.Len(t, info.Cluster.Replicas, 2, "the leads stream has 3 replicas")
	leader := cl.Index(info.Cluster.Leader)
	require.GreaterOrEqual(t, leader, 0, "leader %q is a node of the cluster", info.Cluster.Leader)
	cl.Stop(leader)
	require.Less(t, len(r.sb.Sandbox.Customers()), len(r.ids), "the kill must land before the batch is done")

	// Events keep arriving while the cluster elects new leaders.
	r.publishLeads(js, 10, 10, 15)
	r.waitDone(js)
	r.requireExactlyOnce(js)

	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err = st.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 20, info.State.Msgs, "every event is in the stream once")
	require.NotEqual(t, cl.Name(leader), info.Cluster.Leader, "another node leads the stream")
	r.stopWorkers()
}

func TestFaultOneOfThreeReplicasKilledMidRunLosesAndDuplicatesNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())

	victimMetrics := freeAddr(t)
	victim := r.startWorker("fault-replica-1", "--metrics-addr", victimMetrics)
	r.waitStream(js) // the first replica creates the stream; the others find it
	r.startWorker("fault-replica-2")
	r.startWorker("fault-replica-3")
	r.publishLeads(js, 0, 30, 10)
	r.waitCreated(len(r.ids) * 3 / 10)
	require.Eventually(t, func() bool {
		n, _ := metricValue(t, victimMetrics, `kustomer_sync_items_total{outcome="created",workflow="faults"}`)
		return n > 0
	}, faultDeadline, faultPoll, "the replica to kill never created its share\n%s", r.logs())
	victim.kill(t)
	require.Less(t, len(r.sb.Sandbox.Customers()), len(r.ids), "the kill must land before the batch is done")

	r.waitDone(js)
	r.requireExactlyOnce(js)
	r.stopWorkers()
}
