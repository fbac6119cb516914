package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

const bulkLoopConfig = `
workflows:
  - name: bulk
    subject: "leads.>"
    mode: bulk
    linger: 20ms
    loop: "{{trigger.leads}}"
    retry: {max_attempts: 2, initial_delay: 50ms}
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
`

// kustomerRejects is a Kustomer whose bulk endpoint refuses the items named
// "bad", as a rule the mapping does not know about would: the item gets a
// property Kustomer's schema does not allow. With noPointer, a whole-request
// rejection does not say which item it was.
type kustomerRejects struct {
	*kustomer.Client
	noPointer bool
	fixed     *atomic.Bool // when set and true, nothing is refused
}

func (k kustomerRejects) CreateCustomersBulk(ctx context.Context, items []kustomer.BulkItem) (*kustomer.BulkJob, error) {
	for i, it := range items {
		if k.fixed != nil && k.fixed.Load() {
			break
		}
		var body map[string]any
		if err := json.Unmarshal(it.Body.(json.RawMessage), &body); err != nil {
			return nil, err
		}
		if body["name"] == "bad" {
			body["bogus"] = true
			items[i].Body = body
		}
	}
	job, err := k.Client.CreateCustomersBulk(ctx, items)
	var ke *kustomer.Error
	if k.noPointer && errors.As(err, &ke) {
		ke.Pointer = ""
	}
	return job, err
}

// bulkConfigWith is bulkLoopConfig with other settings (YAML lines of the
// workflow) in place of its retry policy.
func bulkConfigWith(settings ...string) string {
	var b strings.Builder
	for _, line := range settings {
		b.WriteString("    " + line + "\n")
	}
	return strings.Replace(bulkLoopConfig, "    retry: {max_attempts: 2, initial_delay: 50ms}\n", b.String(), 1)
}

// unavailable is Kustomer's transient failure of an op: a 503.
func unavailable(op string) error {
	return &kustomer.Error{Op: op, Class: kustomer.ClassRetryable, StatusCode: 503, Message: "Service Unavailable"}
}

func leadsEvent(names ...string) string {
	var leads []string
	for _, n := range names {
		leads = append(leads, fmt.Sprintf(`{"id":"ext-%s","name":%q}`, n, n))
	}
	return `{"leads":[` + strings.Join(leads, ",") + `]}`
}

func TestBulkBatchWithOneItemKustomerRejectsCreatesTheOthersAndDeadLettersThatOne(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		whole     bool // the sandbox rejects the whole request for one bad item
		noPointer bool // ... without saying which
	}{
		{name: "reported per item"},
		{name: "request rejected whole, naming the item", whole: true},
		{name: "request rejected whole, split to find the item", whole: true, noPointer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, harnessOptions{
				config:  bulkLoopConfig,
				sandbox: sandbox.Config{BulkDelay: 50 * time.Millisecond, BulkRejectInvalid: tc.whole},
				wrap: func(k Kustomer) Kustomer {
					return kustomerRejects{Client: k.(*kustomer.Client), noPointer: tc.noPointer}
				},
			})
			seq := h.publish("leads.web", "bulk-1", leadsEvent("a", "b", "bad", "c", "d", "e"))
			rec := h.waitRun(seq)
			require.Equal(t, runlog.Partial, rec.Status)
			require.Len(t, rec.Items, 6)
			for _, it := range rec.Items {
				if it.Index == 2 {
					require.Equal(t, !tc.whole, it.BulkJob != "", "a rejected request made no job")
					require.Equal(t, outcome.Permanent, it.Outcome)
					continue
				}
				require.NotEmpty(t, it.BulkJob, "item %d: the run record names its bulk job", it.Index)
				require.Equal(t, outcome.Created, it.Outcome, "item %d", it.Index)
				require.NotEmpty(t, it.CustomerID)
			}
			counts := h.sb.Sandbox.CountByExternalID()
			require.Len(t, counts, 5)
			for _, n := range []string{"a", "b", "c", "d", "e"} {
				require.Equal(t, 1, counts["ext-"+n])
			}
			dls := h.deadLetters()
			require.Len(t, dls, 1)
			require.Equal(t, []int{2}, dls[0].Items)
			require.Equal(t, outcome.Permanent, dls[0].Class)
			require.Contains(t, dls[0].Error, "bogus", "the dead letter carries Kustomer's reason")
			h.waitIdle("bulk")
		})
	}
}

// stoppedClock is the sandbox's clock: bulk jobs complete only when a test
// moves it.
type stoppedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stoppedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stoppedClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestBulkGathersItemsOfManyEventsIntoOneBatchAndAcksEachOnlyWhenAllItsItemsAreDone(t *testing.T) {
	t.Parallel()
	clock := &stoppedClock{now: time.Now()}
	h := setup(t, harnessOptions{
		config: `
workflows:
  - name: bulk
    subject: "leads.>"
    mode: bulk
    linger: 300ms
    loop: "{{trigger.leads}}"
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
`,
		sandbox: sandbox.Config{BulkDelay: time.Second, Now: clock.Now},
	})
	// One event of 150 items and 40 of one item: 190 items, two batches.
	var big []string
	for i := range 150 {
		big = append(big, fmt.Sprintf("big%d", i))
	}
	var seqs []uint64
	seqs = append(seqs, h.publish("leads.web", "big", leadsEvent(big...)))
	for i := range 40 {
		seqs = append(seqs, h.publish("leads.web", fmt.Sprintf("one-%d", i), leadsEvent(fmt.Sprintf("one%d", i))))
	}
	// Both jobs submitted, and polled at least once, and not complete:
	// nothing is acknowledged, nothing recorded.
	require.Eventually(t, func() bool {
		st := h.sb.Sandbox.Stats()
		return st.BulkJobs == 2 && st.BulkPolls >= 2
	}, 20*time.Second, 10*time.Millisecond, "logs:\n%s", h.logs.String())
	cons, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"bulk")
	require.NoError(t, err)
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, len(seqs), info.NumAckPending, "no event is acknowledged before its items are done")
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Empty(t, recs)

	clock.Add(2 * time.Second)
	for _, seq := range seqs {
		rec := h.waitRun(seq)
		require.Equal(t, runlog.Succeeded, rec.Status, "event %d", seq)
	}
	h.waitIdle("bulk")
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 2, st.BulkJobs, "190 items of 41 events in two bulk requests")
	require.Len(t, h.sb.Sandbox.CountByExternalID(), 190)
	for id, n := range h.sb.Sandbox.CountByExternalID() {
		require.Equal(t, 1, n, id)
	}
	require.Equal(t, st.Requests, st.BulkJobs+st.BulkPolls+st.Lookups, "only bulk requests: %+v", st)
	require.Equal(t, 1, st.Lookups, "the start probe, nothing else: %+v", st)
}

func TestBulkJobThatNeverCompletesIsFollowedUntilBulkJobTimeoutThenDeadLetteredAsExhausted(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 2, initial_delay: 50ms}`, `bulk_job_timeout: 4s`),
		sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond, BulkStuckRate: 1},
		// A lease far shorter than the job is followed: the ledger record
		// of the request, renewed meanwhile, keeps the items this replica's.
		worker: func(c *Config) { c.Ledger.Lease, c.Kustomer.Timeout = 400*time.Millisecond, 300*time.Millisecond },
	})
	seq := h.publish("leads.web", "stuck-1", leadsEvent("a", "b"))
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Failed, rec.Status)
	for _, it := range rec.Items {
		require.Equal(t, outcome.Exhausted, it.Outcome)
		require.Equal(t, 1, it.Attempts, "followed, not sent again")
		require.NotEmpty(t, it.BulkJob)
	}
	require.GreaterOrEqual(t, rec.Ended.Sub(rec.Started), 4*time.Second, "followed until bulk_job_timeout")
	dls := h.deadLetters()
	require.Len(t, dls, 1)
	require.Equal(t, outcome.Exhausted, dls[0].Class)
	require.Equal(t, []int{0, 1}, dls[0].Items)
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 1, st.BulkJobs, "items are never sent twice while their job may still create them")
	require.GreaterOrEqual(t, st.BulkPolls, 2)
	require.Less(t, st.BulkPolls, 20, "polled ever less often")
	require.Empty(t, h.sb.Sandbox.Customers())
}

func TestBulkRunOfThreeReplicasNeverExceedsTheBudgetInAnyWindow(t *testing.T) {
	t.Parallel()
	// Windows of 6 s hold 12 requests: 120 a minute, split by 3 replicas.
	// Kustomer's windows are ten times as long; the limiters' burst is one
	// request, as the default burst (a twentieth of a minute's budget) would
	// be half of such a short window.
	const perWindow, window = 12, 6 * time.Second
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: perWindow, Window: window, BulkDelay: 300 * time.Millisecond})
	cfg, err := mapping.Parse("test.yaml", []byte(bulkLoopConfig))
	require.NoError(t, err)
	var budgets []*replica.Budget
	for i := range 3 {
		nc, js := srv.Connect(t)
		w, err := New(Config{
			Conn: nc, JetStream: js, Workflows: cfg.Workflows,
			Kustomer:      kustomer.Config{BaseURL: sb.URL, APIKey: testAPIKey},
			RatePerMinute: perWindow * int(time.Minute/window),
			RateBurst:     1,
			ReplicaID:     fmt.Sprintf("r%d", i),
			Registerer:    prometheus.NewRegistry(),
		})
		require.NoError(t, err)
		require.NoError(t, w.Start(context.Background()))
		budgets = append(budgets, w.budget)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = w.Stop(ctx)
		})
	}
	// The replicas know of each other before the work arrives, as they do
	// after their first heartbeats in a deployment.
	require.Eventually(t, func() bool {
		for _, b := range budgets {
			if b.Replicas() != 3 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	_, js := srv.Connect(t)
	// 2,000 leads: about 20 bulk requests and 20 polls, several windows' worth.
	var ids []string
	for e := range 20 {
		var names []string
		for i := range 100 {
			names = append(names, fmt.Sprintf("e%di%d", e, i))
			ids = append(ids, fmt.Sprintf("ext-e%di%d", e, i))
		}
		m := nats.NewMsg(fmt.Sprintf("leads.batch.%d", e))
		m.Data = []byte(leadsEvent(names...))
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return len(sb.Sandbox.CountByExternalID()) == len(ids)
	}, 90*time.Second, 50*time.Millisecond, "stats: %+v", sb.Sandbox.Stats())
	st := sb.Sandbox.Stats()
	t.Logf("%+v", st)
	require.Zero(t, st.RateLimited, "no request beyond the budget in any window")
	require.Zero(t, st.Duplicates)
	require.Greater(t, st.Requests, 2*perWindow, "the run spanned several windows")
}

// The look-up waits until Kustomer can no longer be running the job (the
// client's timeout, then bulk_job_timeout): here the job Kustomer queued
// completes 1 s after the client gave up on its answer, and is found then,
// not sent again.
func TestBulkRequestWhoseAnswerIsLostIsLookedUpByExternalIDBeforeBeingSentAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 2, initial_delay: 50ms}`, `bulk_job_timeout: 2s`),
		sandbox: sandbox.Config{BulkDelay: 3 * time.Second, TimeoutRate: 1, TimeoutHang: 3 * time.Second},
		worker:  func(c *Config) { c.Ledger.Lease = 5 * time.Second }, // the client gives up after 2 s
	})
	st := h.requireLostAnswerFoundNotSentAgain("lost-1")
	require.Equal(t, 1+3, st.LookupsByExternalID, "the start probe, then one look-up per item")
}

// requireLostAnswerFoundNotSentAgain publishes an event of three leads
// whose first bulk request Kustomer queues without answering (the
// sandbox's TimeoutRate is 1 until then), then answers, and requires the
// event to succeed with every item found by its externalId, nothing sent
// twice. It returns the sandbox's stats.
func (h *harness) requireLostAnswerFoundNotSentAgain(msgID string) sandbox.Stats {
	t := h.t
	t.Helper()
	seq := h.publish("leads.web", msgID, leadsEvent("a", "b", "c"))
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().BulkJobs >= 1 }, 10*time.Second, 10*time.Millisecond)
	f := h.sb.Sandbox.Faults()
	f.TimeoutRate = 0
	h.sb.Sandbox.SetFaults(f)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	for _, it := range rec.Items {
		require.Equal(t, outcome.AlreadyCreated, it.Outcome, "item %d was found by its externalId", it.Index)
	}
	st := h.sb.Sandbox.Stats()
	require.Zero(t, st.Duplicates)
	require.Equal(t, 1, st.BulkJobs, "nothing was sent again")
	return st
}

func TestBulkWorkflowPausesOnASystemicFailureAndResumesWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkLoopConfig,
		sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond},
		worker:  func(c *Config) { c.PauseNakDelay = 100 * time.Millisecond },
	})
	h.stopWorker()
	host := newSwitchableHost(t, h.sb.URL)
	host.toKust.Store(true)
	h.opts.wrap = clientFor(t, host)
	h.start(bulkLoopConfig)
	h.requireWorkflowState(replica.StateRunning)
	first := h.waitRun(h.publish("leads.web", "pause-1", leadsEvent("a", "b")))
	require.Equal(t, runlog.Succeeded, first.Status)
	paused := h.worker.metrics.Paused.WithLabelValues("bulk")
	require.Zero(t, testutil.ToFloat64(paused))

	host.toKust.Store(false) // the base URL now reaches some other web server
	seq := h.publish("leads.web", "pause-2", leadsEvent("c", "d"))
	st := h.requireWorkflowState(replica.StatePaused)
	require.Contains(t, st.Reason, "/v1/customers/bulk", "the reason names the bulk request")
	require.Equal(t, 1.0, testutil.ToFloat64(paused))
	require.Empty(t, h.deadLetters(), "a systemic failure pauses; it dead-letters nothing")

	host.toKust.Store(true)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	for _, it := range rec.Items {
		require.NotEmpty(t, it.BulkJob, "item %d", it.Index)
	}
	h.requireWorkflowState(replica.StateRunning)
	require.Zero(t, testutil.ToFloat64(paused))
	h.waitIdle("bulk")
	require.Empty(t, h.deadLetters())
	for _, id := range []string{"ext-a", "ext-b", "ext-c", "ext-d"} {
		require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()[id], id)
	}
}

func TestBulkReplayOfADeadLetterSendsOnlyItsFailedItems(t *testing.T) {
	t.Parallel()
	fixed := &atomic.Bool{}
	h := setup(t, harnessOptions{
		config:  bulkLoopConfig,
		sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond},
		wrap:    func(k Kustomer) Kustomer { return kustomerRejects{Client: k.(*kustomer.Client), fixed: fixed} },
	})
	seq := h.publish("leads.web", "replay-1", leadsEvent("a", "bad", "c"))
	orig := h.waitRun(seq)
	require.Equal(t, runlog.Partial, orig.Status)
	dls := h.deadLetters()
	require.Len(t, dls, 1)
	require.Equal(t, []int{1}, dls[0].Items)
	submits := h.worker.metrics.BulkRequests.WithLabelValues("bulk", "submit")
	require.Equal(t, 1.0, testutil.ToFloat64(submits), "one bulk request for the three items")

	fixed.Store(true) // whatever Kustomer refused is fixed
	require.Equal(t, 1, h.replay(dlq.Filter{All: true}).Replayed)
	runs := h.waitRuns(2)
	replayed := runs[0]
	require.Equal(t, runlog.Succeeded, replayed.Status)
	require.True(t, replayed.Replay)
	require.Equal(t, dls[0].ID, replayed.ReplayOf.DeadLetter)
	require.Len(t, replayed.Items, 1, "only the failed item runs again")
	require.Equal(t, 1, replayed.Items[0].Index)
	require.Equal(t, outcome.Created, replayed.Items[0].Outcome)
	require.NotEmpty(t, replayed.Items[0].BulkJob)
	require.NotEqual(t, orig.Items[1].BulkJob, replayed.Items[0].BulkJob, "sent in a new bulk request")
	h.waitIdle("bulk")
	require.Empty(t, h.deadLetters())
	require.Equal(t, 2.0, testutil.ToFloat64(submits))
	counts := h.sb.Sandbox.CountByExternalID()
	require.Equal(t, map[string]int{"ext-a": 1, "ext-bad": 1, "ext-c": 1}, counts)
}

func TestBulkTenThousandItemEventAndOneItemEventBothFinishWithoutRedelivery(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config: bulkLoopConfig,
		// Every job outlasts the ack wait: only InProgress keeps the events ours.
		sandbox: sandbox.Config{RatePerMinute: -1, BulkDelay: 2500 * time.Millisecond},
		rate:    600000,
		worker:  func(c *Config) { c.AckWait = 2 * time.Second },
	})
	big := h.publishLoopEvents("big", 1, 10000)
	small := h.publish("leads.web", "small-1", leadsEvent("small"))
	// The small event waits for room beside the big one's 10,000 items
	// (the items bound), which under -race on a busy machine takes a while.
	require.Equal(t, runlog.Succeeded, h.waitRunWithin(small, 3*time.Minute).Status)
	h.waitCreated(len(big)+1, 3*time.Minute)
	h.waitIdle("bulk")
	h.requireEachCreatedOnce(append(big, "ext-small"))
	cons, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"bulk")
	require.NoError(t, err)
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered, "the big event stayed ours while its items were in bulk jobs")
	recs, err := h.runs.List(context.Background(), runlog.Filter{})
	require.NoError(t, err)
	require.Equal(t, 2, len(recs), "one run per event: none was delivered twice")
	for _, r := range recs {
		require.Equal(t, runlog.Succeeded, r.Status, r.ID)
		require.Greater(t, r.Ended.Sub(r.Started), 2*time.Second, "%s outlasted the ack wait", r.ID)
	}
	st := h.sb.Sandbox.Stats()
	require.LessOrEqual(t, st.BulkJobs, (len(big)+1)/100+2, "full batches: %+v", st)
}

// kustomerPollFails is a Kustomer whose first polls of a bulk job fail as
// a transient outage would (a 503).
type kustomerPollFails struct {
	*kustomer.Client
	failures atomic.Int32 // polls still to fail
}

func (k *kustomerPollFails) BulkResults(ctx context.Context, id string) (*kustomer.BulkResults, error) {
	if k.failures.Add(-1) >= 0 {
		return nil, unavailable("bulk")
	}
	return k.Client.BulkResults(ctx, id)
}

// A replica that takes over a dead replica's claims finds the bulk job they
// were sent in. When that job cannot be read for a while (a 503), the items
// are asked about again later, not looked up and sent again while the job
// may still create them.
func TestBulkEarlierJobUnreadableForAWhileIsAskedAgainNotSentAgain(t *testing.T) {
	t.Parallel()
	poll := &kustomerPollFails{}
	poll.failures.Store(2)
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 10, initial_delay: 100ms}`, `idempotency_key: "{{item.id}}"`),
		sandbox: sandbox.Config{BulkDelay: 1500 * time.Millisecond},
		// The dead replica's record of its request looks alive for a lease.
		worker: func(c *Config) { c.Ledger.Lease = 3 * time.Second },
		wrap: func(k Kustomer) Kustomer {
			poll.Client = k.(*kustomer.Client)
			return poll
		},
	})
	// A replica, dead since, claimed the three items and sent them in a job
	// that is still running.
	job := h.deadReplicaSent([]string{"a", "b", "c"}, time.Now().Add(-time.Minute))

	seq := h.publish("leads.web", "taken-over-1", leadsEvent("a", "b", "c"))
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	for _, it := range rec.Items {
		require.Equal(t, job.ID, it.BulkJob, "item %d: its outcome came from the earlier job", it.Index)
		require.Equal(t, 1, it.Attempts, "item %d: the job was followed through the 503s, one attempt", it.Index)
	}
	require.Negative(t, poll.failures.Load(), "the failing polls were made")
	st := h.sb.Sandbox.Stats()
	require.Zero(t, st.Duplicates)
	require.Equal(t, 3, st.Creates, "each lead created once, by the earlier job")
	require.Equal(t, 1, st.BulkJobs, "nothing was sent again")
	require.Equal(t, 1, st.LookupsByExternalID, "the start probe only: no item was looked up")
}

// Kustomer accepts every bulk request, but every item in the jobs fails
// with a 503: an outage, seen item by item. The workflow pauses as per-item
// mode would after as many failures in a row, dead-letters nothing, and
// creates every lead once Kustomer recovers.
func TestBulkItemsFailingTransientlyOneAfterAnotherPauseTheWorkflow(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkLoopConfig,
		sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond, BulkItemFailureRate: 1},
		worker:  func(c *Config) { c.PauseNakDelay = 100 * time.Millisecond },
	})
	names := strings.Split("a b c d e f g h i j k l", " ") // more than the breaker's 10
	seq := h.publish("leads.web", "outage-1", leadsEvent(names...))
	st := h.requireWorkflowState(replica.StatePaused)
	require.Contains(t, st.Reason, "transient failures in a row")
	require.Empty(t, h.deadLetters(), "an outage pauses; it dead-letters nothing")

	f := h.sb.Sandbox.Faults()
	f.BulkItemFailureRate = 0
	h.sb.Sandbox.SetFaults(f)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	h.requireWorkflowState(replica.StateRunning)
	require.Empty(t, h.deadLetters())
	for _, n := range names {
		require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ext-"+n], n)
	}
}

// A bulk workflow and a per-item workflow of the same replica meet the same
// item (one idempotency key, the shared ledger scope) while the bulk job
// that creates it still runs. The per-item attempt waits for the bulk one
// instead of taking this replica's live claim over as stale: the lead is
// created once.
func TestBulkAndPerItemWorkflowsOfOneReplicaCreateASharedItemOnce(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("bulk-and-per-item"),
		sandbox: sandbox.Config{BulkDelay: 1500 * time.Millisecond},
	})
	bulkSeq := h.publish("leads.web", "shared-1", leadsEvent("a"))
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().BulkJobs == 1 }, 10*time.Second, 5*time.Millisecond)
	singleSeq := h.publish("signups.web", "shared-2", leadsEvent("a"))
	require.Equal(t, runlog.Succeeded, h.waitRun(bulkSeq).Status)
	single := h.waitRun(singleSeq)
	require.Equal(t, runlog.Succeeded, single.Status)
	require.Equal(t, outcome.AlreadyCreated, single.Items[0].Outcome, "the per-item workflow found what the bulk job created")
	st := h.sb.Sandbox.Stats()
	require.Zero(t, st.Duplicates)
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ext-a"])
}

// kustomerLookupsFail fails the first look-ups of leads' externalIds with a
// 503.
type kustomerLookupsFail struct {
	*kustomer.Client
	failures atomic.Int32
}

func (k *kustomerLookupsFail) CustomerByExternalID(ctx context.Context, id string) (*kustomer.Customer, error) {
	if strings.HasPrefix(id, "ext-") && k.failures.Add(-1) >= 0 {
		return nil, unavailable("lookup")
	}
	return k.Client.CustomerByExternalID(ctx, id)
}

// After a bulk request whose answer was lost, a look-up that fails is no
// answer: the items are asked about again, not sent again.
func TestBulkFailedLookUpAfterALostAnswerIsAskedAgainNotSentAgain(t *testing.T) {
	t.Parallel()
	k := &kustomerLookupsFail{}
	k.failures.Store(3)
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 6, initial_delay: 50ms}`, `bulk_job_timeout: 1s`),
		sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond, TimeoutRate: 1, TimeoutHang: 3 * time.Second},
		worker:  func(c *Config) { c.Ledger.Lease = 3 * time.Second },
		wrap:    func(c Kustomer) Kustomer { k.Client = c.(*kustomer.Client); return k },
	})
	h.requireLostAnswerFoundNotSentAgain("lost-2")
	require.Negative(t, k.failures.Load(), "the failing look-ups were made")
}

// A bulk request whose answer was lost leaves its items' claims naming it;
// a per-item workflow of the same replica then meets one of its items
// (shared ledger scope) while the job still runs. The per-item attempt
// takes the claim over but respects the bulk request's record: it waits
// until Kustomer can no longer be running the job (sent + the client's
// 2 s timeout + bulk_job_timeout 2 s; the job takes 4 s), then finds the customer the job
// created instead of creating it again (a look-up during the job answers
// 404).
func TestPerItemAttemptWaitsForABulkRequestThatMayStillCreateTheItem(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("bulk-and-per-item-short-timeout"),
		sandbox: sandbox.Config{BulkDelay: 4 * time.Second, BulkSubmitLostRate: 1},
		worker:  func(c *Config) { c.Ledger.Lease = 2500 * time.Millisecond },
	})
	h.publish("leads.web", "shared-lost-1", leadsEvent("a"))
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().BulkLost == 1 }, 10*time.Second, 5*time.Millisecond)
	f := h.sb.Sandbox.Faults()
	f.BulkSubmitLostRate = 0
	h.sb.Sandbox.SetFaults(f)
	singleSeq := h.publish("signups.web", "shared-lost-2", leadsEvent("a"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(lastLines(h.logs.String(), 60))
		}
	})
	single := h.waitRun(singleSeq)
	require.Equal(t, runlog.Succeeded, single.Status)
	require.Equal(t, outcome.AlreadyCreated, single.Items[0].Outcome, "the per-item workflow found what the bulk job created")
	require.Zero(t, h.sb.Sandbox.Stats().Duplicates)
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ext-a"])
}
