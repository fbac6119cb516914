package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

const (
	// bulkEstimateInitial is how long a bulk job is expected to take before
	// any has been seen to finish.
	bulkEstimateInitial = 2 * time.Second
	// bulkEstimateFloor bounds the learnt estimate from below.
	bulkEstimateFloor = 50 * time.Millisecond
	// bulkLedgerParallel bounds the ledger operations of one batch in flight.
	bulkLedgerParallel = 16
)

// BulkKustomer is what a bulk workflow needs of a Kustomer client besides
// [Kustomer]; *kustomer.Client has it.
type BulkKustomer interface {
	CreateCustomersBulk(ctx context.Context, items []kustomer.BulkItem) (*kustomer.BulkJob, error)
	BulkResults(ctx context.Context, id string) (*kustomer.BulkResults, error)
}

// bulkOutcome is one item's outcome in bulk mode: the loop's, and the bulk
// job that decided it.
type bulkOutcome struct {
	loop.Outcome
	job        string
	unrecorded bool // the customer exists, the ledger could not record it
}

// bulkItem is one item of an event on its way through the batcher.
type bulkItem struct {
	index      int
	key        string // ledger key; also the item's _clientRef
	req        mapping.Request
	body       body // req encoded
	log        zerolog.Logger
	done       chan<- bulkOutcome
	attempts   int
	err        error
	first      time.Time
	last       time.Time
	job        string    // the last bulk job the item was sent in
	queued     time.Time // when it became ready
	notBefore  time.Time // for a retry: its earliest next attempt
	unrecorded bool      // created or found, but not recorded in the ledger

	span trace.Span // the item's span, when traced (worker/tracing.go)
}

// batcher gathers the items of a bulk workflow's events into bulk requests,
// follows each job to its end and hands every item its outcome. One per bulk
// workflow; safe for concurrent use. Its goroutines run only while it holds
// items, owned by wg, which the workflow's fetch loop waits for.
//
// An item's life: ready (waiting for a batch), in flight (claimed in the
// ledger and sent, or being looked up), then either done (its outcome sent
// on its event's channel) or delayed until its next attempt under the
// workflow's retry policy. Two items with the same ledger key are never in
// flight together: the second waits in blocked until the first is done.
type batcher struct {
	w      *Worker
	f      *flow
	bk     BulkKustomer
	policy loop.Policy
	size   int
	linger time.Duration

	mu       sync.Mutex
	ctx      context.Context
	ready    []*bulkItem
	delayed  []*bulkItem
	active   map[string]bool
	blocked  map[string][]*bulkItem
	inflight int
	running  bool
	wake     chan struct{}
	wg       conc.WaitGroup

	estMu    sync.Mutex
	estimate time.Duration // how long a job takes, learnt from polls
	// slowest is the longest a job was lately seen still running; it
	// fades as jobs are found complete at their first poll.
	slowest time.Duration
	// lowered is closed, and replaced, when the estimate drops, so jobs
	// waiting for their first poll poll at the new estimate.
	lowered chan struct{}
}

func (w *Worker) newBatcher(f *flow) (*batcher, error) {
	bk, ok := w.kustomer.(BulkKustomer)
	if !ok {
		return nil, fmt.Errorf("worker: workflow %s: mode bulk needs a Kustomer client that sends bulk requests", f.wf.Name)
	}
	return &batcher{
		w: w, f: f, bk: bk,
		policy:   retryPolicy(f.wf.Retry),
		size:     min(max(f.wf.BatchSize, 1), kustomer.BulkMax),
		linger:   f.wf.Linger,
		active:   map[string]bool{},
		blocked:  map[string][]*bulkItem{},
		wake:     make(chan struct{}, 1),
		estimate: bulkEstimateInitial,
		lowered:  make(chan struct{}),
	}, nil
}

// runBulk is handle's bulk counterpart of loop.Runner.Run: it gives the
// event's items to the workflow's batcher and waits until each has an
// outcome, keeping the event alive meanwhile. It sets ev.bulkJobs to the
// bulk job of each item that was sent.
func (w *Worker) runBulk(ctx context.Context, f *flow, ev *event, reqs []mapping.Request, keys []string, indexes []int) loop.Report {
	report := loop.Report{Outcomes: make([]loop.Outcome, len(indexes))}
	if ev.bulkJobs == nil { // kept across the runs of a held event's paused items
		ev.bulkJobs = map[int]string{}
	}
	jobs := ev.bulkJobs
	if len(indexes) == 0 {
		return report
	}
	done := make(chan bulkOutcome, len(indexes))
	pos := make(map[int]int, len(indexes))
	now := w.cfg.Clock.Now()
	items := make([]*bulkItem, 0, len(indexes))
	for n, i := range indexes {
		pos[i] = n
		report.Outcomes[n] = loop.Outcome{Index: i, Status: outcome.Canceled}
		enc, err := encodeBody(reqs[i])
		if err != nil {
			report.Outcomes[n] = loop.Outcome{Index: i, Status: outcome.Permanent, Err: loop.Permanent(err)}
			continue
		}
		items = append(items, &bulkItem{index: i, key: keys[i], req: reqs[i], body: enc, done: done, queued: now,
			log: ev.log.With().Int("item", i).Logger(), span: ev.traceBulkItem(ctx, f, i)})
	}
	f.bulk.add(tracing.Detach(ctx), items)
	beat := w.cfg.AckWait / 3
	hb := w.cfg.Clock.NewTimer(beat)
	defer func() { hb.Stop() }()
	for got := 0; got < len(items); {
		select {
		case o := <-done:
			got++
			ev.endBulkItem(o)
			report.Outcomes[pos[o.Index]] = o.Outcome
			if o.job != "" {
				jobs[o.Index] = o.job
			}
			if o.unrecorded {
				ev.unrecorded = true
			}
			if o.Status == outcome.Paused {
				report.Paused = true
			}
		case <-hb.C():
			_ = ev.msg.InProgress()
			hb = w.cfg.Clock.NewTimer(beat)
		case <-ctx.Done():
			return report
		}
	}
	return report
}

// add queues items and makes sure the batcher runs.
func (b *batcher) add(ctx context.Context, items []*bulkItem) {
	b.mu.Lock()
	b.ready = append(b.ready, items...)
	if !b.running {
		b.running, b.ctx = true, ctx
		b.wg.Go(b.loop)
	}
	b.mu.Unlock()
	signal(b.wake)
}

// wait returns once the batcher's goroutines have ended.
func (b *batcher) wait() { b.wg.Wait() }

// loop forms batches: a full one at once, a partial one when its oldest item
// has waited Linger. It takes the request's rate unit before it takes the
// items, so that a batch waiting for the budget fills meanwhile. It ends when
// nothing is left.
func (b *batcher) loop() {
	clock := b.w.cfg.Clock
	for {
		b.mu.Lock()
		ctx := b.ctx
		now := clock.Now()
		kept := b.delayed[:0]
		for _, it := range b.delayed {
			if now.Before(it.notBefore) {
				kept = append(kept, it)
				continue
			}
			it.queued = now
			b.ready = append(b.ready, it)
		}
		clear(b.delayed[len(kept):])
		b.delayed = kept
		if stop := ctx.Err() != nil; stop || b.f.breaker.Open() {
			// Paused: nothing new is sent (jobs in flight are still
			// followed); the events come back when the workflow resumes.
			status := outcome.Paused
			if stop {
				status = outcome.Canceled
			}
			drop := append(b.ready, b.delayed...)
			for _, list := range b.blocked {
				drop = append(drop, list...)
			}
			b.ready, b.delayed, b.blocked = nil, nil, map[string][]*bulkItem{}
			b.mu.Unlock()
			for _, it := range drop {
				it.done <- it.result(status)
			}
			b.mu.Lock()
		}
		if len(b.ready) == 0 && len(b.delayed) == 0 && len(b.blocked) == 0 && b.inflight == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		wait := time.Duration(-1)
		flush := len(b.ready) >= b.size
		if !flush && len(b.ready) > 0 {
			if d := b.ready[0].queued.Add(b.linger).Sub(now); d <= 0 {
				flush = true
			} else {
				wait = d
			}
		}
		for _, it := range b.delayed {
			if d := it.notBefore.Sub(now); wait < 0 || d < wait {
				wait = d
			}
		}
		b.mu.Unlock()
		if !flush {
			if ctx.Err() != nil {
				// Stopping, batches still in flight: wait for them to end
				// (batchDone wakes this loop), not for a context already done.
				ctx = context.WithoutCancel(ctx)
			}
			b.sleep(ctx, wait)
			continue
		}
		if err := b.w.limiter.Wait(ctx); err != nil {
			continue
		}
		batch := b.take()
		if len(batch) == 0 {
			continue
		}
		b.wg.Go(func() {
			defer b.batchDone()
			b.runBatch(ctx, batch)
		})
	}
}

// take removes up to size ready items whose keys are not in flight, here
// or in another attempt of this process (another workflow creating the
// same item, whose live claim would look like this replica's stale one):
// those wait for it, here, or try again a little later.
func (b *batcher) take() []*bulkItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*bulkItem
	n := 0
	for n < len(b.ready) && len(batch) < b.size {
		it := b.ready[n]
		n++
		if b.active[it.key] {
			b.blocked[it.key] = append(b.blocked[it.key], it)
			continue
		}
		if !b.w.ledger.tryHold(it.key) {
			it.notBefore = b.w.cfg.Clock.Now().Add(b.policy.InitialDelay)
			b.delayed = append(b.delayed, it)
			continue
		}
		b.active[it.key] = true
		batch = append(batch, it)
	}
	rest := make([]*bulkItem, len(b.ready)-n, max(len(b.ready)-n, 8))
	copy(rest, b.ready[n:])
	b.ready = rest
	if len(batch) > 0 {
		b.inflight++
	}
	return batch
}

func (b *batcher) batchDone() {
	b.mu.Lock()
	b.inflight--
	b.mu.Unlock()
	signal(b.wake)
}

// sleep waits for d (forever when negative), new items or ctx.
func (b *batcher) sleep(ctx context.Context, d time.Duration) {
	var timeout <-chan time.Time
	if d >= 0 {
		t := b.w.cfg.Clock.NewTimer(d)
		defer t.Stop()
		timeout = t.C()
	}
	select {
	case <-timeout:
	case <-b.wake:
	case <-ctx.Done():
	}
}

// leave ends an item's time in flight: items of the same key waiting for it
// become ready.
func (b *batcher) leave(it *bulkItem) {
	b.mu.Lock()
	delete(b.active, it.key)
	b.w.ledger.unhold(it.key)
	if list := b.blocked[it.key]; len(list) > 0 {
		delete(b.blocked, it.key)
		b.ready = append(b.ready, list...)
	}
	b.mu.Unlock()
}

// finish hands the item its outcome.
func (b *batcher) finish(it *bulkItem, status outcome.Outcome, customerID string) {
	b.leave(it)
	o := it.result(status)
	o.CustomerID = customerID
	if customerID != "" {
		o.Attributes = it.body.json
		o.Err = nil
	}
	it.done <- o
	signal(b.wake)
}

// recorded notes what record returned for the item's customer id.
func (it *bulkItem) recorded(err error, id string) {
	it.unrecorded = it.unrecorded || notRecorded(err, id, it.log)
}

func (it *bulkItem) result(status outcome.Outcome) bulkOutcome {
	return bulkOutcome{job: it.job, unrecorded: it.unrecorded, Outcome: loop.Outcome{
		Index: it.index, Status: status, Attempts: it.attempts,
		Err: it.err, FirstFailure: it.first, LastFailure: it.last,
	}}
}

// settle acts on a failed attempt's decision d, as the loop would: fail the
// item, pause, or try it again in a later batch after the policy's backoff.
func (b *batcher) settle(it *bulkItem, d error) {
	now := b.w.cfg.Clock.Now()
	var later *loop.LaterError
	if errors.As(d, &later) {
		// Not attempted (another replica holds the item): no failure.
		b.delay(it, now.Add(max(later.Delay, b.policy.InitialDelay)))
		return
	}
	if it.first.IsZero() {
		it.first = now
	}
	it.last, it.err = now, d
	var delay time.Duration
	var re *loop.RetryError
	var ue *loop.UnknownError
	switch {
	case errors.Is(d, &loop.PauseError{}):
		b.finish(it, outcome.Paused, "")
		return
	case errors.As(d, &re):
		delay = re.Delay
	case errors.As(d, &ue):
		delay = ue.Delay
	default:
		b.finish(it, outcome.Permanent, "")
		return
	}
	if it.attempts >= b.policy.MaxAttempts {
		b.finish(it, outcome.Exhausted, "")
		return
	}
	b.delay(it, now.Add(max(delay, b.policy.Backoff(it.attempts, rand.Float64()))))
}

// delay takes the item out of flight until notBefore, its next attempt.
func (b *batcher) delay(it *bulkItem, notBefore time.Time) {
	it.notBefore = notBefore
	b.leave(it)
	b.mu.Lock()
	b.delayed = append(b.delayed, it)
	b.mu.Unlock()
	signal(b.wake)
}

// unit waits for the rate unit of a request about items. When there is
// none, it leaves the items to the event's redelivery (shutdown) or settles
// them with decide's decision on the limiter's error, and reports false.
func (b *batcher) unit(ctx context.Context, items []*bulkItem, decide func(error) error) bool {
	err := b.w.limiter.Wait(ctx)
	switch {
	case err == nil:
		return true
	case ctx.Err() != nil:
		b.cancel(items)
	default:
		for _, it := range items {
			it.attempts++
			b.settle(it, decide(err))
		}
	}
	return false
}

// cancel leaves the items to the event's redelivery: their claims stay.
func (b *batcher) cancel(items []*bulkItem) {
	for _, it := range items {
		b.finish(it, outcome.Canceled, "")
	}
}

// each runs fn for every item, a few at a time (ledger round trips).
func each(items []*bulkItem, fn func(it *bulkItem)) {
	p := pool.New().WithMaxGoroutines(bulkLedgerParallel)
	for _, it := range items {
		p.Go(func() { fn(it) })
	}
	p.Wait()
}

// runBatch makes one batch's items durable: claim each key, ask an earlier
// job or look up an item whose earlier attempt's outcome is unknown, send
// the rest in one bulk request and follow it. The caller holds one rate
// unit for the request.
func (b *batcher) runBatch(ctx context.Context, batch []*bulkItem) {
	l := b.w.ledger
	claims := make([]claimResult, len(batch))
	errs := make([]error, len(batch))
	pos := make(map[*bulkItem]int, len(batch))
	for i, it := range batch {
		pos[it] = i
	}
	// The request's token goes into every new claim; the job id Kustomer
	// gives the request is then recorded once, under the token.
	token := newBatchToken()
	each(batch, func(it *bulkItem) {
		i := pos[it]
		claims[i], errs[i] = l.claim(ctx, it.key, token)
	})
	var send, lookups []*bulkItem
	stale := map[*bulkItem]bool{} // claimed earlier: their claims name another request
	earlier := map[string][]*bulkItem{}
	jobs := map[string]string{} // token → job id, of earlier requests
	for i, it := range batch {
		c, err := claims[i], errs[i]
		if err == nil && c.stale && c.bulkJob == "" && c.bulkBatch != "" {
			job, seen := jobs[c.bulkBatch]
			if !seen {
				if job, err = l.batchJob(ctx, c.bulkBatch); err == nil {
					jobs[c.bulkBatch] = job // a read that failed is not taken for "no job"
				}
			}
			c.bulkJob = job
		}
		if err == nil && c.stale {
			stale[it] = true
		}
		switch {
		case ctx.Err() != nil:
			b.cancel([]*bulkItem{it})
		case errors.Is(err, errClaimed):
			b.settle(it, loop.Later(c.wait, err)) // not attempted: no attempt spent
		case err != nil:
			it.attempts++
			b.settle(it, loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
		case c.customerID != "":
			it.log.Info().Str("customer_id", c.customerID).Msg("item already created")
			b.finish(it, outcome.AlreadyCreated, c.customerID)
		case c.stale && c.bulkJob != "":
			it.job = c.bulkJob
			earlier[c.bulkJob] = append(earlier[c.bulkJob], it)
		case c.stale && it.req.ExternalID() != "":
			lookups = append(lookups, it)
		default:
			send = append(send, it)
		}
	}
	for id, items := range earlier {
		lookups = append(lookups, b.resume(ctx, id, items)...)
	}
	for _, it := range lookups {
		if ctx.Err() != nil {
			b.cancel([]*bulkItem{it})
			continue
		}
		b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "lookup").Inc()
		c, err := b.w.lookup(ctx, it.req.ExternalID(), &spender{lim: b.w.limiter, paid: true}, it.log)
		switch {
		case err != nil && ctx.Err() != nil:
			b.cancel([]*bulkItem{it})
		case err != nil:
			// No answer is no "not found": the item is not sent again while
			// an earlier request may have created it.
			d := unresolved(err)
			b.f.breaker.Record(d)
			it.attempts++
			b.settle(it, d)
		case c != nil:
			it.recorded(l.record(context.WithoutCancel(ctx), it.key, c.ID, it.body.sum), c.ID)
			b.finish(it, outcome.AlreadyCreated, c.ID)
		default:
			send = append(send, it)
		}
	}
	var renew []*bulkItem
	for _, it := range send {
		if stale[it] {
			renew = append(renew, it)
		}
	}
	b.claimFor(ctx, token, renew)
	b.send(ctx, send, token, true)
}

// claimFor renews the claims of items for the bulk request token: their
// claims named an earlier request.
func (b *batcher) claimFor(ctx context.Context, token string, items []*bulkItem) {
	each(items, func(it *bulkItem) {
		if err := b.w.ledger.claimForBatch(context.WithoutCancel(ctx), it.key, token); err != nil {
			it.log.Warn().Err(err).Msg("claim not renewed for the bulk request; after a crash the item is looked up instead")
		}
	})
}

// resume asks the bulk job an earlier attempt (maybe another replica's,
// now dead) sent items in what became of them, once, as one attempt:
// created and failed items are settled, and so are the items of a job not
// complete yet or not readable now (a 5xx, a 429, a timeout), to be asked
// again at their next attempt: never sent again while the job may still
// create them. It returns the items a complete job says nothing about, or
// all of them when Kustomer no longer knows the job (404), to be looked up
// and sent again.
func (b *batcher) resume(ctx context.Context, id string, items []*bulkItem) (unknown []*bulkItem) {
	if !b.unit(ctx, items, loop.Unknown) {
		return nil
	}
	b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
	pctx, span := b.traceBulkPoll(ctx, id, items)
	res, err := b.bk.BulkResults(pctx, id)
	tracing.End(span, err)
	if err != nil {
		if ctx.Err() != nil {
			b.cancel(items)
			return nil
		}
		if ke := (*kustomer.Error)(nil); errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound {
			b.f.log.Warn().Err(err).Str("bulk_job", id).Msg("earlier bulk job gone; looking its items up")
			return items
		}
		d := unresolved(fmt.Errorf("worker: earlier bulk job %s unreadable: %w", id, err))
		b.f.breaker.Record(d)
		b.f.log.Warn().Err(err).Str("bulk_job", id).Msg("earlier bulk job unreadable; asking again at the items' next attempt")
		for _, it := range items {
			it.attempts++
			b.settle(it, d)
		}
		return nil
	}
	b.f.log.Info().Str("bulk_job", id).Int("items", len(items)).Bool("complete", res.Completed).Msg("earlier attempt's bulk job read instead of sending again")
	for _, it := range items {
		it.attempts++
	}
	rest := b.apply(ctx, items, id, res, false)
	if !res.Completed {
		// The job may still create them: sending them again could create
		// them twice. Ask again at the next attempt.
		for _, it := range rest {
			b.settle(it, loop.Unknown(fmt.Errorf("worker: bulk job %s is not complete", id)))
		}
		return nil
	}
	return rest
}

// send submits items in one bulk request (with the caller's rate unit when
// haveUnit) and follows the job. The items' claims name the request's
// token; "" makes a new one and renews the claims for it. A request
// Kustomer rejects whole is split to isolate the items it rejects.
func (b *batcher) send(ctx context.Context, items []*bulkItem, token string, haveUnit bool) {
	if len(items) == 0 {
		return
	}
	if token == "" {
		token = newBatchToken()
		b.claimFor(ctx, token, items)
	}
	if !haveUnit && !b.unit(ctx, items, func(err error) error { return loop.RetryAfter(0, err) }) {
		return
	}
	bulk := make([]kustomer.BulkItem, len(items))
	for i, it := range items {
		it.attempts++
		bulk[i] = kustomer.BulkItem{Ref: bulkRef(it.key), Body: it.body.json}
	}
	b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "submit").Inc()
	b.w.metrics.bulkBatchItems.WithLabelValues(b.f.wf.Name).Observe(float64(len(items)))
	ctx, span := b.traceBulkRequest(ctx, items)
	defer span.End()
	job, err := b.bk.CreateCustomersBulk(ctx, bulk)
	if err != nil {
		b.rejected(ctx, items, token, err)
		return
	}
	// The job's clock starts when Kustomer received it, at the latest now.
	// An accepted request tells the breaker nothing yet: the items' outcomes
	// in the job do (apply).
	submitted := b.w.cfg.Clock.Now()
	span.SetAttributes(tracing.AttrBulkJob.String(job.ID))
	log := b.f.log.With().Str("bulk_job", job.ID).Logger()
	for _, it := range items {
		it.job = job.ID
	}
	if err := b.w.ledger.batchSent(context.WithoutCancel(ctx), token, job.ID); err != nil {
		log.Warn().Err(err).Msg("bulk job not recorded in the ledger; after a crash its items are looked up instead")
	}
	res, polls, err := b.follow(ctx, job.ID, submitted)
	switch {
	case ctx.Err() != nil:
		log.Info().Msg("shutdown while following a bulk job; its items are left to the redelivery, which reads the job")
		b.cancel(items)
		return
	case err != nil:
		// The job could not be read: its items' outcome is unknown; their
		// claims name the job, so the next attempt reads it again.
		log.Warn().Err(err).Msg("bulk job unreadable")
		for _, it := range items {
			b.settle(it, err)
		}
		return
	}
	rest := b.apply(ctx, items, job.ID, res, true)
	for _, it := range rest {
		// Not complete in time (or, complete, silent about the item): the
		// claim names the job, so the next attempt asks it again first.
		b.settle(it, loop.Unknown(fmt.Errorf("worker: bulk job %s reported no outcome for the item within %s", job.ID, b.giveUp())))
	}
	log.Info().Int("items", len(items)).Int("created", res.SuccessCount).Int("failed", res.FailureCount).Int("polls", polls).
		Bool("complete", res.Completed).Dur("took", b.w.cfg.Clock.Now().Sub(submitted)).Msg("bulk job done")
}

// rejected deals with a bulk request (token) that failed as a whole.
func (b *batcher) rejected(ctx context.Context, items []*bulkItem, token string, err error) {
	if ctx.Err() != nil {
		b.cancel(items) // sent or not: the claims stay, the redelivery looks up
		return
	}
	d := decide(err)
	b.f.breaker.Record(d)
	if n, ok := kustomer.BulkRejectedItem(err); ok && n < len(items) {
		// Kustomer named the bad item: it alone fails, the others go again.
		bad := items[n]
		b.w.ledger.release(context.WithoutCancel(ctx), bad.key)
		bad.log.Warn().Err(err).Msg("bulk request rejected for this item")
		b.settle(bad, d)
		rest := append(append([]*bulkItem{}, items[:n]...), items[n+1:]...)
		for _, it := range rest {
			it.attempts--
		}
		b.send(ctx, rest, token, false) // the rejected request created nothing
		return
	}
	if errors.Is(d, &loop.PermanentError{}) && len(items) > 1 {
		// Rejected whole without saying for which item: halve until the
		// bad ones are alone.
		for _, it := range items {
			it.attempts--
		}
		half := len(items) / 2
		b.f.log.Info().Err(err).Int("items", len(items)).Msg("bulk request rejected whole; splitting it to isolate the bad items")
		var halves conc.WaitGroup
		halves.Go(func() { b.send(ctx, items[:half], "", false) })
		halves.Go(func() { b.send(ctx, items[half:], "", false) })
		halves.Wait()
		return
	}
	var ue *loop.UnknownError
	unknown := errors.As(d, &ue)
	if unknown {
		// Kustomer may have queued the job and may still run it: the items
		// are looked up by externalId before being sent again, but no sooner
		// than a job this worker follows is given to complete.
		d = &loop.UnknownError{Err: ue.Err, Delay: max(ue.Delay, b.giveUp())}
	}
	b.f.log.Warn().Err(err).Int("items", len(items)).Str("class", decision(d)).Msg("bulk request failed")
	for _, it := range items {
		if !unknown {
			b.w.ledger.release(context.WithoutCancel(ctx), it.key)
		}
		b.settle(it, d)
	}
}

// follow waits for job id to complete, polling as little as it can: once at
// the learnt duration of a job, and when that was too early, again a little
// later. It gives up, returning the job's incomplete results, after
// giveUp.
func (b *batcher) follow(ctx context.Context, id string, submitted time.Time) (*kustomer.BulkResults, int, error) {
	clock := b.w.cfg.Clock
	wait, lowered := b.expected()
	polls := 0
	for {
		if d := submitted.Add(wait).Sub(clock.Now()); d > 0 {
			t := clock.NewTimer(d)
			select {
			case <-t.C():
			case <-lowered:
				// Jobs turned out faster: the first poll comes sooner.
				t.Stop()
				wait, lowered = b.expected()
				continue
			case <-ctx.Done():
				t.Stop()
				return nil, polls, ctx.Err()
			}
		}
		lowered = nil
		if err := b.w.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, polls, ctx.Err()
			}
			return nil, polls, loop.Unknown(err) // the job may still create them
		}
		polls++
		b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
		pctx, span := b.traceBulkPoll(ctx, id, nil)
		res, err := b.bk.BulkResults(pctx, id)
		tracing.End(span, err)
		elapsed := clock.Now().Sub(submitted)
		if err != nil {
			if ctx.Err() != nil {
				return nil, polls, ctx.Err()
			}
			d := decide(err)
			b.f.breaker.Record(d)
			var re *loop.RetryError
			if errors.Is(d, &loop.PauseError{}) {
				return nil, polls, d
			}
			if !errors.As(d, &re) || elapsed >= b.giveUp() {
				return nil, polls, loop.Unknown(err)
			}
			wait = elapsed + max(re.Delay, wait/4, bulkEstimateFloor)
			continue
		}
		if res.Completed {
			b.learn(elapsed, polls == 1)
			return res, polls, nil
		}
		if elapsed >= b.giveUp() {
			return res, polls, nil
		}
		wait = b.learn(elapsed, false)
	}
}

// expected is how long a job is expected to take, and a channel closed
// when that estimate drops.
func (b *batcher) expected() (time.Duration, <-chan struct{}) {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	return b.estimate, b.lowered
}

// learn updates the estimate from a poll elapsed after submission. A job
// found complete at the first poll may have been done earlier, so the
// estimate creeps down, and halves while no job was lately seen running for
// even half of it (jobs far faster than the estimate); one not complete yet
// took longer than elapsed, so the estimate jumps above. It returns the
// estimate.
func (b *batcher) learn(elapsed time.Duration, complete bool) time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	was := b.estimate
	if complete {
		b.slowest = b.slowest * 199 / 200
		b.estimate = max(b.estimate*199/200, bulkEstimateFloor)
		if b.slowest < b.estimate/2 {
			b.estimate = max(b.estimate/2, b.slowest*11/10, bulkEstimateFloor)
		}
	} else {
		b.slowest = max(b.slowest, elapsed)
		b.estimate = min(max(b.estimate, elapsed*11/10, elapsed+bulkEstimateFloor), b.giveUp())
	}
	if b.estimate < was {
		close(b.lowered)
		b.lowered = make(chan struct{})
	}
	b.w.metrics.bulkEstimate.WithLabelValues(b.f.wf.Name).Set(b.estimate.Seconds())
	return b.estimate
}

// giveUp is how long a job is followed before the attempt counts as failed
// with an unknown outcome: half the claims' lease. The next attempt asks
// the same job again; its items are sent again only once the job is
// complete without them, or gone.
func (b *batcher) giveUp() time.Duration {
	return max(b.w.ledger.lease/2, bulkEstimateFloor)
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
		d := decide(o.Err)
		switch {
		case errors.Is(d, &loop.PauseError{}):
			b.f.breaker.Record(d) // credentials or role: the workflow pauses at once
		case errors.Is(d, &loop.PermanentError{}):
			up = true
		default:
			transient = append(transient, d)
		}
		b.w.ledger.release(context.WithoutCancel(ctx), it.key)
		it.log.Warn().Err(o.Err).Str("bulk_job", id).Str("class", decision(d)).Msg("create failed")
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
		it.recorded(b.w.ledger.record(context.WithoutCancel(ctx), it.key, ids[it], it.body.sum), ids[it])
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
