package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

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
// back in several batches): one poll per check, however many wait.
type jobWatch struct {
	id    string
	done  chan struct{} // closed with res or err set
	res   *kustomer.BulkResults
	err   error
	polls int

	mu sync.Mutex
	// prev is the job this batcher sent before this one (nil for a job
	// of an earlier request), dropped once this one ends: in Kustomer's
	// queue this job may wait for it.
	prev  *jobWatch
	sent  time.Time
	due   time.Time // its next poll
	end   time.Time // when it was found complete (or ended otherwise)
	chain bool      // due was set by the gap after prev
	// misses counts its polls that found it running; changed is closed
	// (and replaced) when its next poll is set or it ended.
	misses  int
	changed chan struct{}
}

// polled records a poll's answer (ended: the job's end; else it was
// found running) and, at its end, wakes the job sent after it.
func (w *jobWatch) polled(now time.Time, ended bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !ended {
		w.misses++
		return
	}
	w.end, w.prev = now, nil
	w.notify()
}

// notify wakes the job sent after this one (its watch waits on changed).
// The caller holds w.mu.
func (w *jobWatch) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// prevRef is when the job sent before this one ended or, while it runs,
// its next poll; zero without one.
func (w *jobWatch) prevRef() time.Time {
	w.mu.Lock()
	p := w.prev
	w.mu.Unlock()
	if p == nil {
		return time.Time{}
	}
	due, end := p.state()
	return cmp.Or(end, due)
}

// state is the job's next poll and, once it ended, when.
func (w *jobWatch) state() (due, end time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.due, w.end
}

// prevEnd is when the job sent before this one ended (zero while it runs,
// or without one), and when it was sent.
func (w *jobWatch) prevEnd() (end, sent time.Time) {
	w.mu.Lock()
	p := w.prev
	w.mu.Unlock()
	if p == nil {
		return time.Time{}, time.Time{}
	}
	_, end = p.state()
	return end, p.sent
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
// the request's ledger record fresh meanwhile.
func (b *batcher) watch(ctx context.Context, id, token string, count int, sent time.Time, chained bool) *jobWatch {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if w, ok := b.watches[id]; ok {
		return w
	}
	w := &jobWatch{id: id, done: make(chan struct{}), sent: sent, changed: make(chan struct{})}
	if chained {
		w.prev, b.last = b.last, w
	}
	b.watches[id] = w
	if sent.IsZero() {
		sent = b.w.cfg.Clock.Now() // an earlier version's record: from now on
	}
	b.wg.Go(func() {
		w.res, w.err = b.follow(ctx, w, token, count, sent)
		w.polled(b.w.cfg.Clock.Now(), true)
		b.watchMu.Lock()
		delete(b.watches, id)
		if b.last == w {
			b.last = nil
		}
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
// bulk_job_timeout, polling as little as it can: at the learnt duration of
// a job, and when that was too early, again later. Every third of a lease
// it writes the request's ledger record (token) again: other replicas
// then leave its items to this one.
func (b *batcher) follow(ctx context.Context, w *jobWatch, token string, count int, sent time.Time) (*kustomer.BulkResults, error) {
	clock := b.w.cfg.Clock
	beat := max(b.w.ledger.Lease()/3, bulkEstimateFloor)
	nextBeat := clock.Now().Add(beat)
	wait := time.Duration(0) // past the estimate: after an early poll
	// held: this poll was put off for the job sent before it (its timing
	// says nothing of Kustomer's queue); probe: this job is polled at its
	// own time, gap or not.
	var held, probed, probe bool
	for {
		now := clock.Now()
		if token != "" && !now.Before(nextBeat) {
			nextBeat = now.Add(beat)
			if err := b.w.ledger.BatchSent(context.WithoutCancel(ctx), token, w.id, count, sent); err != nil {
				b.f.log.Warn().Err(err).Str("bulk_job", w.id).Msg("bulk job's ledger record not renewed")
			}
		}
		due := sent.Add(max(b.expected(), wait))
		cd, gap, prevCh, ok := b.chainDue(w)
		if gap > 0 && w.polls == 0 && !probed {
			// Every bulkGapProbe-th job is polled at its own time,
			// however the gap says: found complete, the queue is not
			// serial (any more).
			probed, probe = true, b.probeDue()
		}
		if probe {
			ok, prevCh = false, nil
		}
		chain := ok && cd.After(due)
		if chain {
			due = cd
			held = true
		}
		chain = chain && gap > 0 // found running then: the gap was short
		w.mu.Lock()
		if !due.Equal(w.due) {
			w.notify()
		}
		w.due, w.chain = due, chain
		w.mu.Unlock()
		if prevCh != nil && !now.Before(due) && !now.Before(cd) {
			// The job sent before it is being polled now: its answer
			// says whether this one can be done yet.
			held = true
			t := clock.NewTimer(bulkOrderWait)
			select {
			case <-prevCh:
			case <-t.C():
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
			t.Stop()
			continue
		}
		if now.Before(due) {
			d := min(due.Sub(now), nextBeat.Sub(now))
			if token == "" {
				d = due.Sub(now)
			}
			t := clock.NewTimer(max(d, 0))
			select {
			case <-t.C():
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
			continue
		}
		if err := b.w.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			wait = clock.Now().Sub(sent) + bulkEstimateFloor
			continue
		}
		w.polls++
		b.w.metrics.BulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
		pctx, span := b.traceBulkPoll(ctx, w.id, nil)
		res, err := b.bk.BulkResults(pctx, w.id)
		tracing.End(span, err)
		elapsed := clock.Now().Sub(sent)
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
			wait = elapsed + max(delay, b.expected()/4)
			continue
		}
		w.mu.Lock()
		chained := w.chain
		w.mu.Unlock()
		if res.CompleteFor(count) || count == 0 && b.jobDone(ctx, w) {
			res.Completed = true
			b.learn(elapsed, true, w.polls == 1)
			switch {
			case probe && w.polls == 1:
				b.notSerial()
			case !held:
				b.learnGap(w, clock.Now(), true, chained)
			case chained:
				b.learnGap(w, clock.Now(), true, true)
			}
			return res, nil
		}
		w.polled(clock.Now(), false)
		held = false
		if chained {
			// Still running at the gap after the job before it: asked
			// again a quarter of the (raised) gap later.
			if elapsed >= b.jobTimeout() {
				return nil, loop.Unknown(fmt.Errorf("worker: bulk job %s not complete after bulk_job_timeout %s", w.id, b.jobTimeout()))
			}
			gap := b.learnGap(w, clock.Now(), false, true)
			wait = elapsed + max(gap/4, bulkEstimateFloor)
			continue
		}
		if elapsed >= b.jobTimeout() {
			return nil, loop.Unknown(fmt.Errorf("worker: bulk job %s not complete after bulk_job_timeout %s", w.id, b.jobTimeout()))
		}
		// Not done: an empty list of batches, or counts short of the
		// items. Asked again later, never at once.
		b.learn(elapsed, false, w.polls == 1)
		wait = max(elapsed*5/4, elapsed+bulkEstimateFloor)
		if ref := w.prevRef(); ref.After(sent) {
			// The job before it was in flight alongside: this one may be
			// queued behind it, for a job's run time after it completes
			// (when it was found complete, or its next poll).
			wait = max(wait, ref.Add(b.shortestRun()).Sub(sent))
		}
	}
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
	job, err := b.bk.(interface {
		BulkJob(ctx context.Context, id string) (*kustomer.BulkJob, error)
	}).BulkJob(ctx, w.id)
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
	outs := res.OutcomesByRef(refs)
	if whole {
		outs = res.Outcomes(refs)
	}
	var created []*bulkItem
	ids := map[*bulkItem]string{}
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
		b.w.ledger.Release(context.WithoutCancel(ctx), it.key)
		it.log.Warn().Err(o.Err).Str("bulk_job", id).Str("class", loop.DecisionName(d)).Msg("create failed")
		b.settle(it, d)
	}
	if up || len(created) > 0 {
		b.f.breaker.Record(nil)
	} else {
		for _, d := range transient {
			b.f.breaker.Record(d)
		}
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
