package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
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
func (b *batcher) watch(ctx context.Context, id, token string, count int, sent time.Time) *jobWatch {
	b.watchMu.Lock()
	defer b.watchMu.Unlock()
	if w, ok := b.watches[id]; ok {
		return w
	}
	w := &jobWatch{id: id, done: make(chan struct{})}
	b.watches[id] = w
	if sent.IsZero() {
		sent = b.w.cfg.Clock.Now() // an earlier version's record: from now on
	}
	b.wg.Go(func() {
		w.res, w.err = b.follow(ctx, w, token, count, sent)
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
// bulk_job_timeout, polling as little as it can: at the learnt duration of
// a job, and when that was too early, again later. Every third of a lease
// it writes the request's ledger record (token) again: other replicas
// then leave its items to this one.
func (b *batcher) follow(ctx context.Context, w *jobWatch, token string, count int, sent time.Time) (*kustomer.BulkResults, error) {
	clock := b.w.cfg.Clock
	beat := max(b.w.ledger.Lease()/3, bulkEstimateFloor)
	nextBeat := clock.Now().Add(beat)
	wait := time.Duration(0) // past the estimate: after an early poll
	for {
		now := clock.Now()
		if token != "" && !now.Before(nextBeat) {
			nextBeat = now.Add(beat)
			if err := b.w.ledger.BatchSent(context.WithoutCancel(ctx), token, w.id, count, sent); err != nil {
				b.f.log.Warn().Err(err).Str("bulk_job", w.id).Msg("bulk job's ledger record not renewed")
			}
		}
		due := sent.Add(max(b.expected(), wait))
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
		b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
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
		if res.CompleteFor(count) || count == 0 && b.jobDone(ctx, w) {
			res.Completed = true
			b.learn(elapsed, true, w.polls == 1)
			return res, nil
		}
		if elapsed >= b.jobTimeout() {
			return nil, loop.Unknown(fmt.Errorf("worker: bulk job %s not complete after bulk_job_timeout %s", w.id, b.jobTimeout()))
		}
		// Not done: an empty list of batches, or counts short of the
		// items. Asked again later, never at once.
		b.learn(elapsed, false, w.polls == 1)
		wait = max(elapsed*5/4, elapsed+bulkEstimateFloor)
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
	b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
	job, err := b.bk.(interface {
		BulkJob(ctx context.Context, id string) (*kustomer.BulkJob, error)
	}).BulkJob(ctx, w.id)
	return err == nil && job.Done()
}

// expected is how long a job is expected to take.
func (b *batcher) expected() time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	return b.estimate
}

// learn updates the estimate from a poll elapsed after submission. It
// tracks a high quantile of the jobs' durations, so that about one job in
// forty needs a second poll: a job found complete at its first poll
// lowers it by 0.5 %, one found running raises it above elapsed by a
// quarter (every job waiting for its first poll then waits longer too);
// while no job was lately seen running for even half of it (jobs far
// faster than the estimate), it halves.
func (b *batcher) learn(elapsed time.Duration, complete, first bool) {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	switch {
	case complete && first:
		b.slowest = b.slowest * 199 / 200
		b.estimate = max(b.estimate*199/200, bulkEstimateFloor)
		if b.slowest < b.estimate/2 {
			b.estimate = max(b.estimate/2, b.slowest*5/4, bulkEstimateFloor)
		}
	case !complete:
		b.slowest = max(b.slowest, elapsed)
		b.estimate = min(max(b.estimate, elapsed*5/4, elapsed+bulkEstimateFloor), b.jobTimeout())
	}
	b.w.metrics.bulkEstimate.WithLabelValues(b.f.wf.Name).Set(b.estimate.Seconds())
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
		it.log.Warn().Err(o.Err).Str("bulk_job", id).Str("class", decisionName(d)).Msg("create failed")
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
