package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kustomer-sync/kustomer-sync/bulkpace"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// errJobGone means Kustomer answered 404 for a bulk job: it forgot it.
var errJobGone = errors.New("worker: bulk job gone")

// jobWatch is one bulk job this batcher follows to its end, once for
// every batch holding its items (after a take-over, a job's items can come
// back in several batches): one poll per check, however many wait. The
// batcher's pacer (bulkpace) times its polls.
type jobWatch struct {
	id    string
	done  chan struct{} // closed with res or err set
	res   *kustomer.BulkResults
	err   error
	polls int
	job   *bulkpace.Job
}

// wait returns the job's results once complete, or why it was not.
func (w *jobWatch) wait(ctx context.Context) (*kustomer.BulkResults, error) {
	select {
	case <-w.done:
		return w.res, w.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// watch returns the watch of job id, starting it if none runs: it follows
// the job (a request of count items sent at sent, under token) and keeps
// the request's ledger record fresh meanwhile. inOrder says this batcher
// sent it (after the job it sent before).
func (b *batcher) watch(ctx context.Context, id, token string, count int, sent time.Time, inOrder bool) *jobWatch {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if w, ok := b.watches[id]; ok {
		return w
	}
	now := b.w.cfg.Clock.Now()
	w := &jobWatch{id: id, done: make(chan struct{}), job: b.pace.Start(sent, now, inOrder)}
	b.watches[id] = w
	if sent.IsZero() {
		sent = now // an earlier version's record: from now on
	}
	b.wg.Go(func() {
		w.res, w.err = b.follow(ctx, w, token, count, sent)
		b.pace.Ended(w.job, b.w.cfg.Clock.Now())
		b.watchMu.Lock()
		delete(b.watches, id)
		b.watchMu.Unlock()
		close(w.done)
	})
	return w
}

// following reports whether this batcher follows job id now.
func (b *batcher) following(id string) bool {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	_, ok := b.watches[id]
	return ok
}

// follow polls job id until it is complete, gone, or older than
// bulk_job_timeout, when the pacer says (as seldom as it can). Every third
// of a lease it writes the request's ledger record (token) again: other
// replicas then leave its items to this one.
func (b *batcher) follow(ctx context.Context, w *jobWatch, token string, count int, sent time.Time) (*kustomer.BulkResults, error) {
	clock := b.w.cfg.Clock
	beat := max(b.w.ledger.Lease()/3, bulkEstimateFloor)
	nextBeat := clock.Now().Add(beat)
	for {
		now := clock.Now()
		if token != "" && !now.Before(nextBeat) {
			nextBeat = now.Add(beat)
			if err := b.w.ledger.BatchSent(context.WithoutCancel(ctx), token, w.id, count, sent); err != nil {
				b.f.log.Warn().Err(err).Str("bulk_job", w.id).Msg("bulk job's ledger record not renewed")
			}
		}
		dropped := b.pace.Dropped()
		due, prev := b.pace.Next(w.job, now)
		if prev != nil {
			if !b.waitFor(ctx, bulkpace.OrderWait, prev) {
				return nil, ctx.Err()
			}
			continue
		}
		if now.Before(due) {
			d := due.Sub(now)
			if token != "" {
				d = min(d, nextBeat.Sub(now))
			}
			if !b.waitFor(ctx, max(d, 0), dropped) {
				return nil, ctx.Err()
			}
			continue
		}
		if err := b.w.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			b.pace.Retry(w.job, clock.Now(), bulkEstimateFloor)
			continue
		}
		w.polls++
		b.w.metrics.BulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
		pctx, span := b.traceBulkPoll(ctx, w.id, nil)
		res, err := b.bk.BulkResults(pctx, w.id)
		tracing.End(span, err)
		now = clock.Now()
		elapsed := now.Sub(sent)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if ke := (*kustomer.Error)(nil); errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound {
				return nil, errJobGone
			}
			d := kustomerDecision(err)
			b.f.breaker.Record(d)
			if errors.Is(d, &loop.PauseError{}) {
				return nil, d
			}
			if elapsed >= b.jobTimeout() {
				return nil, loop.Unknown(fmt.Errorf("worker: bulk job %s unreadable after bulk_job_timeout %s: %w", w.id, b.jobTimeout(), err))
			}
			var re *loop.RetryError
			delay := bulkEstimateFloor
			if errors.As(d, &re) {
				delay = max(re.Delay, delay)
			}
			b.pace.Retry(w.job, now, max(delay, b.pace.Expected()/4))
			continue
		}
		if res.CompleteFor(count) || count == 0 && b.jobDone(ctx, w) {
			res.Completed = true
			b.pace.Polled(w.job, now, true)
			return res, nil
		}
		// Not done: an empty list of batches, or counts short of the
		// items. Asked again later, never at once.
		b.pace.Polled(w.job, now, false)
		if elapsed >= b.jobTimeout() {
			return nil, loop.Unknown(fmt.Errorf("worker: bulk job %s not complete after bulk_job_timeout %s", w.id, b.jobTimeout()))
		}
	}
}

// waitFor waits for d, for ch (when not nil) or for ctx; false when ctx
// ended.
func (b *batcher) waitFor(ctx context.Context, d time.Duration, ch <-chan struct{}) bool {
	t := b.w.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C():
	case <-ctx.Done():
		return false
	}
	return true
}

// jobDone asks GET /v1/bulk/{id} whether a job is complete, for a request
// whose item count is unknown (recorded by an earlier version), when its
// batches carry no status.
func (b *batcher) jobDone(ctx context.Context, w *jobWatch) bool {
	if b.w.limiter.Wait(ctx) != nil {
		return false
	}
	w.polls++
	b.w.metrics.BulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
	job, err := b.bk.BulkJob(ctx, w.id)
	return err == nil && job.Done()
}

// apply gives the items of job id their reported outcomes: created ones are
// recorded in the ledger, failed ones settled; it returns the items the job
// says nothing about (not complete, or left out). whole says items are the
// job's whole list in submission order, so results without refs can be
// matched by position.
func (b *batcher) apply(ctx context.Context, items []*bulkItem, id string, res *kustomer.BulkResults, whole bool) (unknown []*bulkItem) {
	refs := make([]string, len(items))
	for i, it := range items {
		refs[i] = bulkRef(it.key)
	}
	var outs []kustomer.BulkResult
	if whole {
		outs = res.Outcomes(refs)
	} else {
		outs = res.OutcomesByRef(refs)
	}
	var created []*bulkItem
	ids := map[*bulkItem]string{}
	type failure struct {
		it       *bulkItem
		err, dec error
	}
	var failed []failure
	// As in per-item mode, each item is one observation for the breaker:
	// a created item or a permanent failure means Kustomer works; items
	// failing transiently one after another mean an outage.
	var transient []error
	up := false
	for i, it := range items {
		it.job = id
		o := outs[i]
		if o.Err == nil && o.CustomerID != "" {
			created = append(created, it)
			ids[it] = o.CustomerID
			continue
		}
		var ke *kustomer.Error
		if errors.As(o.Err, &ke) && ke.Timeout {
			unknown = append(unknown, it)
			continue
		}
		d := kustomerDecision(o.Err)
		switch {
		case errors.Is(d, &loop.PauseError{}):
			b.f.breaker.Record(d) // credentials or role: the workflow pauses at once
		case errors.Is(d, &loop.PermanentError{}):
			up = true
		default:
			transient = append(transient, d)
		}
		failed = append(failed, failure{it, o.Err, d})
	}
	if up || len(created) > 0 {
		b.f.breaker.Record(nil)
	} else {
		for _, d := range transient {
			b.f.breaker.Record(d)
		}
	}
	// Only then are the failed items settled: a retry is never sent before
	// the breaker has heard of the failures that pause the workflow (each
	// release is a ledger round trip, longer together than a short retry
	// delay).
	for _, f := range failed {
		b.w.ledger.Release(context.WithoutCancel(ctx), f.it.key)
		f.it.log.Warn().Err(f.err).Str("bulk_job", id).Str("class", loop.DecisionName(f.dec)).Msg("create failed")
		b.settle(f.it, f.dec)
	}
	each(created, func(it *bulkItem) {
		it.recorded(b.w.ledger.Record(context.WithoutCancel(ctx), it.key, ids[it], it.body.sum), ids[it])
	})
	for _, it := range created {
		it.log.Debug().Str("customer_id", ids[it]).Str("bulk_job", id).Msg("customer created")
		b.finish(it, outcome.Created, ids[it])
	}
	return unknown
}

// bulkRef is an item's _clientRef: its ledger key, unique per item and
// stable across replicas, so any replica can match a job's results.
func bulkRef(key string) string {
	if len(key) <= kustomer.ClientRefMax {
		return key
	}
	return key[len(key)-kustomer.ClientRefMax:]
}

// bulkWait is how long a per-item attempt that took over claim (stale)
// must wait before it may look the item up and create it: an earlier bulk
// request the claim names (this replica's, another workflow's, or a dead
// replica's) may still create it, and a look-up answers 404 meanwhile. It
// is 0 once that request cannot: it was never sent, its job is complete or
// gone, or it was sent without an answer longer ago than the client's
// timeout plus the longest bulk_job_timeout of this replica's bulk
// workflows (the default when it runs none).
// While a replica follows the request (its record written within a lease),
// the item waits for that replica.
func (w *Worker) bulkWait(ctx context.Context, c ledger.Claim) (time.Duration, error) {
	if !c.Stale || c.BulkBatch == "" && c.BulkJob == "" {
		return 0, nil
	}
	rec := ledger.BatchRecord{Job: c.BulkJob, Found: c.BulkJob != ""}
	if c.BulkBatch != "" {
		r, err := w.ledger.BatchRead(ctx, c.BulkBatch)
		if err != nil {
			return 0, err
		}
		if r.Found {
			rec = r
		}
	}
	if !rec.Found {
		return 0, nil // never sent
	}
	now := w.cfg.Clock.Now()
	lease := w.ledger.Lease()
	if age := now.Sub(rec.Beat); !rec.Beat.IsZero() && age < lease && age > -lease {
		return lease - max(age, 0), nil
	}
	if rec.Job != "" {
		if bk, ok := w.kustomer.(BulkKustomer); ok {
			if err := w.limiter.Wait(ctx); err != nil {
				return 0, err
			}
			res, err := bk.BulkResults(ctx, rec.Job)
			var ke *kustomer.Error
			switch {
			case errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound:
				return 0, nil // gone: what it created is found by look-up
			case err != nil:
				return 0, err
			case res.CompleteFor(rec.Count) || rec.Count == 0 && res.Completed:
				return 0, nil
			}
			return max(lease/3, bulkEstimateFloor), nil
		}
	}
	sent := cmp.Or(rec.Sent, rec.Beat)
	timeout := mapping.BulkJobTimeoutDefault
	if flows := w.running.Load(); flows != nil {
		timeout = 0
		for _, f := range *flows {
			if f.wf.Mode == mapping.ModeBulk {
				timeout = max(timeout, f.wf.BulkJobTimeout)
			}
		}
		timeout = cmp.Or(timeout, mapping.BulkJobTimeoutDefault)
	}
	until := sent.Add(cmp.Or(w.cfg.Kustomer.Timeout, kustomer.DefaultTimeout) + timeout)
	if now.Before(until) {
		return until.Sub(now), nil
	}
	return 0, nil
}
