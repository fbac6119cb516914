package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// In every job model the sandbox offers, jobs that outlast the claims'
// lease (1 s here) are followed to completion: every lead is created
// once, no event is dead-lettered, and jobs are polled about once.
func TestBulkInEveryJobModelEveryLeadIsCreatedOnceWithoutDeadLetters(t *testing.T) {
	t.Parallel()
	for _, model := range sandbox.JobModels {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			sc := sandbox.Config{BulkDelay: 1500 * time.Millisecond, Seed: 7}
			require.NoError(t, sc.SetJobModel(model))
			switch model {
			case sandbox.JobModelLost:
				sc.BulkSubmitLostRate = 0.3 // some of the few jobs here
			case sandbox.JobModelLate:
				sc.BulkSubmitLate = 300 * time.Millisecond // within the client's timeout
			case sandbox.JobModelSerial:
				sc.BulkDelay = 500 * time.Millisecond
			}
			h := setup(t, harnessOptions{
				config:  bulkConfigWith(`retry: {max_attempts: 2, initial_delay: 50ms}`, `bulk_job_timeout: 4s`, `batch_size: 20`),
				sandbox: sc,
				worker:  func(c *Config) { c.Ledger.Lease, c.Kustomer.Timeout = time.Second, 500*time.Millisecond },
			})
			ids := h.publishLoopEvents(model, 12, 10)
			h.waitCreated(len(ids), time.Minute)
			runs := h.waitRuns(12)
			for _, r := range runs {
				require.Equal(t, runlog.Succeeded, r.Status, "%s\n%s", r.ID, lastLines(h.logs.String(), 30))
			}
			h.requireEachCreatedOnce(ids)
			require.Empty(t, h.deadLetters())
			st := h.sb.Sandbox.Stats()
			require.Zero(t, st.RateLimited)
			answered := st.BulkJobs - st.BulkLost
			require.LessOrEqual(t, st.BulkPolls, 3*answered+2, "polls %d for %d jobs: %+v", st.BulkPolls, st.BulkJobs, st)
			t.Logf("%s: %+v", model, st)
		})
	}
}

// A lost answer to a job slower than any look-up would wait for: the items
// are neither looked up nor sent again while Kustomer may still run the
// job (the client's 2 s timeout plus bulk_job_timeout), and spend no
// attempt meanwhile (max_attempts 1); then the look-ups find them.
func TestBulkLostAnswerOfASlowJobIsNeverSentAgainWhileTheJobMayRun(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 1, initial_delay: 50ms}`, `bulk_job_timeout: 6s`),
		sandbox: sandbox.Config{BulkDelay: 5 * time.Second, BulkSubmitLostRate: 1},
		worker:  func(c *Config) { c.Ledger.Lease = 3 * time.Second },
	})
	seq := h.publish("leads.web", "lost-slow", leadsEvent("a", "b", "c"))
	require.Eventually(t, func() bool { return h.sb.Sandbox.Stats().BulkLost == 1 }, 10*time.Second, 10*time.Millisecond)
	f := h.sb.Sandbox.Faults()
	f.BulkSubmitLostRate = 0
	h.sb.Sandbox.SetFaults(f)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status, lastLines(h.logs.String(), 20))
	for _, it := range rec.Items {
		require.Equal(t, outcome.AlreadyCreated, it.Outcome, "item %d: found once its job could no longer run", it.Index)
	}
	require.GreaterOrEqual(t, rec.Ended.Sub(rec.Started), 8*time.Second, "held until sent + 2 s + 6 s")
	h.requireEachCreatedOnce([]string{"ext-a", "ext-b", "ext-c"})
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 1, st.BulkJobs, "nothing sent again")
	require.Equal(t, 1+3, st.LookupsByExternalID, "the start probe, then one look-up per item")
	require.Empty(t, h.deadLetters())
}

// Items without an externalId cannot be looked up: after a lost answer
// they are held until Kustomer can no longer run the job, then
// dead-lettered as exhausted with an "outcome unknown" error, never sent
// again (the job may have created them).
func TestBulkLostAnswerForItemsWithoutExternalIDEndsOutcomeUnknownNotSentAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  testWorkflow("bulk-without-externalid"),
		sandbox: sandbox.Config{BulkDelay: 200 * time.Millisecond, BulkSubmitLostRate: 1},
		worker:  func(c *Config) { c.Ledger.Lease = 3 * time.Second },
	})
	seq := h.publish("leads.web", "lost-noid", leadsEvent("a", "b"))
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Failed, rec.Status)
	for _, it := range rec.Items {
		require.Equal(t, outcome.Exhausted, it.Outcome)
	}
	dls := h.deadLetters()
	require.Len(t, dls, 1)
	require.Equal(t, outcome.Exhausted, dls[0].Class)
	require.Contains(t, dls[0].Error, "outcome unknown, the customer may exist")
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 1, st.BulkJobs, "never sent again")
	require.Len(t, h.sb.Sandbox.Customers(), 2, "the job with the lost answer created them")
}

// After a take-over, one job's items come back in several batches (here
// batch_size 2, six items): the job is polled once per check, not once per
// batch.
func TestBulkJobHoldingItemsOfSeveralBatchesIsPolledOncePerCheck(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`retry: {max_attempts: 3, initial_delay: 50ms}`, `batch_size: 2`),
		sandbox: sandbox.Config{BulkDelay: 1500 * time.Millisecond},
		worker:  func(c *Config) { c.Ledger.Lease, c.Kustomer.Timeout = time.Second, 500*time.Millisecond },
	})
	names := []string{"a", "b", "c", "d", "e", "f"}
	job := h.deadReplicaSent(names, time.Now())
	before := h.sb.Sandbox.Stats()

	var seqs []uint64
	for _, n := range names {
		seqs = append(seqs, h.publish("leads.web", "several-"+n, leadsEvent(n)))
	}
	for _, seq := range seqs {
		rec := h.waitRun(seq)
		require.Equal(t, runlog.Succeeded, rec.Status)
		require.Equal(t, job.ID, rec.Items[0].BulkJob)
	}
	st := h.sb.Sandbox.Stats()
	require.Equal(t, 1, st.BulkJobs, "nothing sent again")
	polls := st.BulkPolls - before.BulkPolls
	require.LessOrEqual(t, polls, 2, "one job in three batches: polled once per check, not per batch")
	h.requireEachCreatedOnce([]string{"ext-a", "ext-b", "ext-c", "ext-d", "ext-e", "ext-f"})
}

// A bulk workflow holds at most batch_size × bulkJobsInFlight items (here
// batch_size 2: 200), whatever the backlog: events of 100 leads are
// fetched only as room frees up.
func TestBulkHoldsNoMoreItemsThanItsBoundWhateverTheBacklog(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`batch_size: 2`, `bulk_job_timeout: 2s`),
		sandbox: sandbox.Config{RatePerMinute: -1, BulkDelay: 50 * time.Millisecond},
		rate:    600000,
		worker:  func(c *Config) { c.Kustomer.Timeout = 10 * time.Second },
	})
	ids := h.publishLoopEvents("bound", 6, 100)
	h.waitCreated(len(ids), 2*time.Minute)
	h.waitRuns(6)
	h.requireEachCreatedOnce(ids)
	b := h.worker.flows[0].bulk
	b.heldMu.Lock()
	peak, bound := b.peak, b.maxItems
	b.heldMu.Unlock()
	require.Equal(t, 2*bulkJobsInFlight, bound)
	require.LessOrEqual(t, peak, bound, "items held at once")
	require.Greater(t, peak, 100, fmt.Sprintf("more than one event at once (peak %d)", peak))
}

// Kustomer runs jobs one after another: a job's time from submission grows
// with the jobs queued before it (here 16 jobs of 250 ms submitted at
// once: the last completes after 4 s), so no estimate of a job's duration
// fits them all. Jobs are polled in the order they were sent, a learnt gap
// after the one before: about one poll a job, not one per estimate missed.
func TestBulkJobsQueuedOneAfterAnotherArePolledAboutOnceEach(t *testing.T) {
	t.Parallel()
	sc := sandbox.Config{BulkDelay: 250 * time.Millisecond}
	require.NoError(t, sc.SetJobModel(sandbox.JobModelSerial))
	h := setup(t, harnessOptions{
		config:  bulkConfigWith(`batch_size: 10`),
		sandbox: sc,
	})
	ids := h.publishLoopEvents("serial-polls", 16, 10)
	h.waitCreated(len(ids), time.Minute)
	h.waitRuns(16)
	h.requireEachCreatedOnce(ids)
	st := h.sb.Sandbox.Stats()
	t.Logf("%d jobs, %d polls", st.BulkJobs, st.BulkPolls)
	require.LessOrEqual(t, st.BulkPolls, st.BulkJobs+st.BulkJobs/4, "polls %d for %d jobs", st.BulkPolls, st.BulkJobs)
}

// What another replica of the deployment learnt of a bulk workflow's job
// durations is this replica's too: a replica that starts, or runs beside
// one that found jobs far longer than its estimate, does not pay the polls
// to learn it again.
func TestBulkReplicaAdoptsTheJobDurationsAnotherReplicaLearntAlsoAfterAReload(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: bulkLoopConfig, sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond}})
	ctx := context.Background()
	other, err := ledger.Open(ctx, h.js, ledger.Config{}, "replica-other", time.Now)
	require.NoError(t, err)
	require.NoError(t, other.SharePace(ctx, "bulk", []byte("45000 36000 0 0")))
	estimate := h.worker.metrics.BulkEstimate.WithLabelValues("bulk")
	require.Eventually(t, func() bool { return testutil.ToFloat64(estimate) == 45 }, 10*time.Second, 10*time.Millisecond,
		"the workflow's estimate is the deployment's")

	// A reload builds the workflows' pacers anew: they start from what the
	// deployment learnt, and keep adopting what the other replicas learn.
	expected := func() time.Duration {
		h.worker.mu.Lock()
		defer h.worker.mu.Unlock()
		for _, f := range h.worker.flows {
			if f.bulk != nil {
				return f.bulk.pace.Expected()
			}
		}
		return 0
	}
	require.NoError(t, h.worker.Reload(ctx, h.worker.cfg.Workflows))
	require.Eventually(t, func() bool { return expected() == 45*time.Second }, 10*time.Second, 10*time.Millisecond,
		"the reloaded workflow starts from the deployment's estimate")
	require.NoError(t, other.SharePace(ctx, "bulk", []byte("60000 50000 0 0")))
	require.Eventually(t, func() bool { return expected() == time.Minute }, 10*time.Second, 10*time.Millisecond,
		"and keeps adopting what the other replica learns")
}
