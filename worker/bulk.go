package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

const (
	// bulkEstimateInitial is how long a bulk job is expected to take before
	// any has been seen to finish.
	bulkEstimateInitial = 2 * time.Second
	// bulkEstimateFloor bounds the learnt estimate from below.
	bulkEstimateFloor = 50 * time.Millisecond
	// bulkLedgerParallel bounds the ledger operations of one batch in flight.
	bulkLedgerParallel = 16
	// bulkJobsInFlight times the batch size bounds the items a bulk
	// workflow holds (its events' items, waiting, in a batch or in a job
	// followed): the memory of a replica goes with it, not with the
	// backlog. Enough to keep the budget busy with jobs of seconds.
	bulkJobsInFlight = 100
	// bulkGapVotes is how many jobs in a row must have completed well
	// after the one before them for the batcher to take Kustomer as
	// running its jobs one after another.
	bulkGapVotes = 2
	// bulkGapProbe: one job in bulkGapProbe is polled at its own time
	// while a gap is in force, to find out whether it still is.
	bulkGapProbe = 32
	// bulkOrderWait bounds how long a due job waits for the answer to the
	// job sent before it: a round trip, not a stall when answers are slow.
	bulkOrderWait = 2 * bulkEstimateFloor
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
	// gap is how long after the job sent before it a job is expected to
	// complete: 0 while jobs run side by side; about a job's run time when
	// Kustomer runs them one after another (its queue then grows with the
	// jobs in flight, and so does a job's time from submission, which the
	// estimate cannot follow). It is set once bulkGapVotes jobs in a row,
	// each in flight when the one before it completed and polled at their
	// own time, completed at least half the shortest job's time after it
	// (beyond the time between their submissions), to the least of those
	// delays; then it shrinks by 1 % for a job found complete at a poll it
	// timed, grows by a quarter for one found still running, and is
	// dropped when one job in bulkGapProbe, polled at its own time, is
	// found complete.
	gap    time.Duration
	votes  []time.Duration
	probes int
	// shortest is the least time from submission a job was found
	// complete in: about a job's run time when none waits for another.
	shortest time.Duration

	watchMu sync.Mutex
	watches map[string]*jobWatch // the jobs followed, by id
	last    *jobWatch            // the job this batcher sent last

	// held counts the items of the events in runBulk, bounded by maxItems
	// (memory goes with the items held, not with the events); room is
	// closed, and replaced, when it drops or an event ends.
	heldMu   sync.Mutex
	held     int
	maxItems int
	peak     int // the most items held at once
	room     chan struct{}
	// fetched counts the events fetched whose handling has not ended,
	// inRun those of them holding items now; seen and seenItems, the
	// events admitted so far and their items, give an event's mean size.
	fetched, inRun  int
	seen, seenItems int
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
		watches:  map[string]*jobWatch{},
		maxItems: min(max(f.wf.BatchSize, 1), kustomer.BulkMax) * bulkJobsInFlight,
		room:     make(chan struct{}),
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
	if !f.bulk.admit(ctx, len(indexes)) {
		return report
	}
	defer f.bulk.unadmit(len(indexes))
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
			log: ev.log.With().Int("item", i).Logger()})
	}
	f.bulk.add(ctx, items)
	beat := w.cfg.AckWait / 3
	hb := w.cfg.Clock.NewTimer(beat)
	defer func() { hb.Stop() }()
	for got := 0; got < len(items); {
		select {
		case o := <-done:
			got++
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

// admit waits until the batcher can hold n more items, or holds none (an
// event larger than the bound runs alone), and counts them held until
// unadmit.
func (b *batcher) admit(ctx context.Context, n int) bool {
	for {
		b.heldMu.Lock()
		if b.held == 0 || b.held+n <= b.maxItems {
			b.held += n
			b.peak = max(b.peak, b.held)
			b.inRun++
			b.seen++
			b.seenItems += n
			b.roomChanged() // the fetch loop learns the event's size
			b.heldMu.Unlock()
			return true
		}
		room := b.room
		b.heldMu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return false
		}
	}
}

func (b *batcher) unadmit(n int) {
	b.heldMu.Lock()
	b.held -= n
	b.inRun--
	b.roomChanged()
	b.heldMu.Unlock()
}

// roomChanged wakes whoever waits for room. Callers hold heldMu.
func (b *batcher) roomChanged() {
	close(b.room)
	b.room = make(chan struct{})
}

// fetchable is how many of n events the fetch loop may fetch now: as many
// as the items bound has room for, at the mean size of an event so far,
// counting the events fetched and not yet holding items at that size too.
// It waits while there is no room, and returns 0 when ctx ends.
func (b *batcher) fetchable(ctx context.Context, n int) int {
	for {
		b.heldMu.Lock()
		mean := 1
		if b.seen > 0 {
			mean = max(1, (b.seenItems+b.seen-1)/b.seen)
		}
		waiting := b.fetched - b.inRun
		free := b.maxItems - b.held - waiting*mean
		switch {
		case b.seen == 0 && waiting == 0:
			b.heldMu.Unlock()
			return 1 // the first event's size is unknown: one alone
		case b.seen > 0 && (free >= mean || b.held == 0 && waiting == 0):
			b.heldMu.Unlock()
			return min(n, max(1, free/mean))
		}
		room := b.room
		b.heldMu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return 0
		}
	}
}

// fetchedEvents counts n events fetched, handledEvent one whose handling ended.
func (b *batcher) fetchedEvents(n int) {
	b.heldMu.Lock()
	b.fetched += n
	b.heldMu.Unlock()
}

func (b *batcher) handledEvent() {
	b.heldMu.Lock()
	b.fetched--
	b.roomChanged()
	b.heldMu.Unlock()
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

// runBatch makes one batch's items durable: claim each key, follow the job
// of an earlier request that holds an item, look up an item whose earlier
// attempt's outcome is unknown, send the rest in one bulk request and
// follow it. The caller holds one rate unit for the request.
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
	earlier := map[earlierKey][]*bulkItem{}
	for i, it := range batch {
		c, err := claims[i], errs[i]
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
		case c.stale && (c.bulkBatch != "" || c.bulkJob != ""):
			k := earlierKey{token: c.bulkBatch, job: c.bulkJob}
			earlier[k] = append(earlier[k], it)
		case c.stale && it.req.ExternalID() != "":
			lookups = append(lookups, it)
		default:
			send = append(send, it)
		}
	}
	// The earlier requests' jobs may take minutes: each is followed on its
	// own while the new items are sent.
	var wg conc.WaitGroup
	for k, items := range earlier {
		wg.Go(func() {
			looks, again := b.earlier(ctx, k, items)
			again = append(again, b.lookUp(ctx, looks)...)
			b.send(ctx, again, "", false)
		})
	}
	send = append(send, b.lookUp(ctx, lookups)...)
	var renew []*bulkItem
	for _, it := range send {
		if stale[it] {
			renew = append(renew, it)
		}
	}
	b.claimFor(ctx, token, renew)
	b.send(ctx, send, token, true)
	wg.Wait()
}

// earlierKey names the earlier request an item's claim names: its token,
// or (claims of earlier versions) its job.
type earlierKey struct{ token, job string }

// lookUp looks items up by externalId: found ones are recorded and done,
// failed look-ups settled; it returns the items Kustomer does not have.
func (b *batcher) lookUp(ctx context.Context, items []*bulkItem) (absent []*bulkItem) {
	l := b.w.ledger
	for _, it := range items {
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
			absent = append(absent, it)
		}
	}
	return absent
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

// earlier settles items whose claims an earlier request (k) holds, maybe
// another replica's, maybe this one's before a restart. What the ledger
// recorded of the request decides:
//   - nothing: it was never sent (or, from an earlier version, not
//     answered): items with an externalId are looked up, the others sent;
//   - followed by a live replica (its record written within a lease): the
//     items wait for it, no attempt spent;
//   - a job: it is followed here, until it completes, fails, is gone or
//     outlasts bulk_job_timeout, and its results settle the items;
//   - sent, no answer: Kustomer may hold a job this replica cannot name.
//     The items stay pending, no attempt spent, until Kustomer can no
//     longer be running it (sent + the client's timeout + bulk_job_timeout),
//     then are looked up; items without an externalId cannot be, and fail
//     as exhausted, their outcome unknown, rather than risk a duplicate.
//
// It returns the items to look up and the items to send again.
func (b *batcher) earlier(ctx context.Context, k earlierKey, items []*bulkItem) (lookups, send []*bulkItem) {
	rec := batchRecord{job: k.job, found: k.job != ""}
	if k.token != "" {
		var err error
		if rec, err = b.w.ledger.batchRead(ctx, k.token); err != nil {
			for _, it := range items {
				it.attempts++
				b.settle(it, loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
			}
			return nil, nil
		}
		if !rec.found && k.job != "" {
			rec.job, rec.found = k.job, true
		}
	}
	if !rec.found {
		for _, it := range items {
			if it.req.ExternalID() != "" {
				lookups = append(lookups, it)
			} else {
				send = append(send, it)
			}
		}
		return lookups, send
	}
	now := b.w.cfg.Clock.Now()
	lease := b.w.ledger.lease
	if age := now.Sub(rec.beat); !rec.beat.IsZero() && rec.owner != b.w.ledger.owner && age < lease && age > -lease {
		// Another replica follows the request (or still waits for its
		// answer): its items are its to settle.
		for _, it := range items {
			b.settle(it, loop.Later(lease-max(age, 0), fmt.Errorf("worker: bulk request %s is followed by replica %s", k.token, rec.owner)))
		}
		return nil, nil
	}
	if rec.job != "" {
		for _, it := range items {
			it.job = rec.job
		}
		return b.resume(ctx, b.watch(ctx, rec.job, k.token, rec.count, rec.sent, false), items), nil
	}
	// Sent without an answer: the job, if Kustomer queued one, is unknown.
	until := b.unknownUntil(rec.sent)
	if now.Before(until) {
		b.f.log.Info().Str("bulk_request", k.token).Time("sent", rec.sent).Time("until", until).Int("items", len(items)).
			Msg("bulk request sent without an answer: its items wait until Kustomer can no longer be running its job")
		for _, it := range items {
			b.settle(it, loop.Later(until.Sub(now), fmt.Errorf("worker: bulk request %s sent at %s got no answer", k.token, rec.sent.UTC().Format(time.RFC3339))))
		}
		return nil, nil
	}
	for _, it := range items {
		if it.req.ExternalID() != "" {
			lookups = append(lookups, it)
			continue
		}
		it.err = loop.Unknown(fmt.Errorf("worker: bulk request %s sent at %s got no answer and the item has no externalId to look it up by: "+
			"outcome unknown, the customer may exist; not sent again, to avoid a duplicate", k.token, rec.sent.UTC().Format(time.RFC3339)))
		now := b.w.cfg.Clock.Now()
		it.first, it.last = cmp.Or(it.first, now), now
		b.finish(it, outcome.Exhausted, "")
	}
	return lookups, nil
}

// unknownUntil is when Kustomer can no longer be running a job for a bulk
// request sent at sent whose answer never came: it received the request
// within the client's timeout, and runs no job for longer than
// bulk_job_timeout.
func (b *batcher) unknownUntil(sent time.Time) time.Time {
	return sent.Add(cmp.Or(b.w.cfg.Kustomer.Timeout, kustomer.DefaultTimeout) + b.jobTimeout())
}

// jobTimeout is the workflow's bulk_job_timeout.
func (b *batcher) jobTimeout() time.Duration {
	return cmp.Or(b.f.wf.BulkJobTimeout, mapping.BulkJobTimeoutDefault)
}

// resume settles items of an earlier request from their job's end (w):
// created and failed items by its results; it returns the items to look
// up: those the job says nothing about once complete, or all of them when
// Kustomer no longer knows the job (404).
func (b *batcher) resume(ctx context.Context, w *jobWatch, items []*bulkItem) (lookups []*bulkItem) {
	res, err := w.wait(ctx)
	for _, it := range items {
		it.attempts++
	}
	switch {
	case ctx.Err() != nil:
		b.cancel(items)
		return nil
	case errors.Is(err, errJobGone):
		b.f.log.Warn().Str("bulk_job", w.id).Msg("earlier bulk job gone; looking its items up")
		return b.withExternalID(items)
	case err != nil:
		b.ended(items, err)
		return nil
	}
	b.f.log.Info().Str("bulk_job", w.id).Int("items", len(items)).Msg("earlier attempt's bulk job read instead of sending again")
	return b.withExternalID(b.apply(ctx, items, w.id, res, false))
}

// withExternalID returns the items that can be looked up; the others,
// whose outcome in a job that says nothing about them is unknown, fail as
// exhausted rather than be sent again and maybe created twice.
func (b *batcher) withExternalID(items []*bulkItem) (lookups []*bulkItem) {
	for _, it := range items {
		if it.req.ExternalID() != "" {
			lookups = append(lookups, it)
			continue
		}
		now := b.w.cfg.Clock.Now()
		it.first, it.last = cmp.Or(it.first, now), now
		it.err = loop.Unknown(fmt.Errorf("worker: bulk job %s reported no outcome for the item and it has no externalId to look it up by: "+
			"outcome unknown, the customer may exist; not sent again, to avoid a duplicate", it.job))
		b.finish(it, outcome.Exhausted, "")
	}
	return lookups
}

// ended settles the items of a job followed to an end other than its
// results: the workflow pausing (they come back on resume, their claims
// naming the job), or bulk_job_timeout (exhausted).
func (b *batcher) ended(items []*bulkItem, err error) {
	now := b.w.cfg.Clock.Now()
	for _, it := range items {
		if errors.Is(err, &loop.PauseError{}) {
			b.settle(it, err)
			continue
		}
		it.first, it.last, it.err = cmp.Or(it.first, now), now, err
		b.finish(it, outcome.Exhausted, "")
	}
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
	// Recorded before it is sent: after a crash, a replica taking the
	// items over knows the request may have become a job, and since when.
	sent, err := b.w.ledger.batchSending(context.WithoutCancel(ctx), token, len(items))
	if err != nil {
		for _, it := range items {
			it.attempts++
			b.settle(it, loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
		}
		return
	}
	bulk := make([]kustomer.BulkItem, len(items))
	for i, it := range items {
		it.attempts++
		bulk[i] = kustomer.BulkItem{Ref: bulkRef(it.key), Body: it.body.json}
	}
	b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "submit").Inc()
	b.w.metrics.bulkBatchItems.WithLabelValues(b.f.wf.Name).Observe(float64(len(items)))
	job, err := b.bk.CreateCustomersBulk(ctx, bulk)
	if err != nil {
		b.rejected(ctx, items, token, sent, err)
		return
	}
	// An accepted request tells the breaker nothing yet: the items'
	// outcomes in the job do (apply).
	log := b.f.log.With().Str("bulk_job", job.ID).Logger()
	for _, it := range items {
		it.job = job.ID
	}
	if err := b.w.ledger.batchSent(context.WithoutCancel(ctx), token, job.ID, len(items), sent); err != nil {
		log.Warn().Err(err).Msg("bulk job not recorded in the ledger; after a crash its items wait out bulk_job_timeout and are looked up")
	}
	w := b.watch(ctx, job.ID, token, len(items), sent, true)
	res, err := w.wait(ctx)
	switch {
	case ctx.Err() != nil:
		log.Info().Msg("shutdown while following a bulk job; its items are left to the redelivery, which follows the job")
		b.cancel(items)
		return
	case errors.Is(err, errJobGone):
		// Kustomer forgot the job it just accepted: what it created is
		// found by look-up.
		log.Warn().Msg("bulk job gone while followed; looking its items up")
		b.send(ctx, b.lookUp(ctx, b.withExternalID(items)), "", false)
		return
	case err != nil:
		log.Warn().Err(err).Msg("bulk job followed to no result")
		b.ended(items, err)
		return
	}
	rest := b.apply(ctx, items, job.ID, res, true)
	if len(rest) > 0 {
		// Complete, silent about these items: look them up.
		b.send(ctx, b.lookUp(ctx, b.withExternalID(rest)), "", false)
	}
	log.Info().Int("items", len(items)).Int("created", res.SuccessCount).Int("failed", res.FailureCount).Int("polls", w.polls).
		Dur("took", b.w.cfg.Clock.Now().Sub(sent)).Msg("bulk job done")
}

// rejected deals with a bulk request (token, sent at sent) that failed as
// a whole.
func (b *batcher) rejected(ctx context.Context, items []*bulkItem, token string, sent time.Time, err error) {
	if ctx.Err() != nil {
		b.cancel(items) // sent or not: the claims stay, the redelivery reads the request's record
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
		b.send(ctx, rest, "", false) // the rejected request created nothing
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
	if errors.Is(d, &loop.UnknownError{}) {
		// Kustomer may have queued a job (the answer was lost) and may
		// still run it; its id is unknown. The items stay pending, no
		// attempt spent, until it can no longer run (their claims name the
		// request, whose record says when it was sent), then are looked
		// up: never sent again meanwhile.
		until := b.unknownUntil(sent)
		b.f.log.Warn().Err(err).Int("items", len(items)).Time("until", until).Msg("bulk request without an answer; its items wait until Kustomer can no longer be running a job for it")
		for _, it := range items {
			it.attempts--
			b.settle(it, loop.Later(until.Sub(b.w.cfg.Clock.Now()), fmt.Errorf("worker: bulk request %s got no answer: %w", token, err)))
		}
		return
	}
	b.f.log.Warn().Err(err).Int("items", len(items)).Str("class", decision(d)).Msg("bulk request failed")
	for _, it := range items {
		b.w.ledger.release(context.WithoutCancel(ctx), it.key)
		b.settle(it, d)
	}
}

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
	beat := max(b.w.ledger.lease/3, bulkEstimateFloor)
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
			if err := b.w.ledger.batchSent(context.WithoutCancel(ctx), token, w.id, count, sent); err != nil {
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
		b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
		res, err := b.bk.BulkResults(ctx, w.id)
		elapsed := clock.Now().Sub(sent)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if ke := (*kustomer.Error)(nil); errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound {
				return nil, errJobGone
			}
			d := decide(err)
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
	b.w.metrics.bulkRequests.WithLabelValues(b.f.wf.Name, "poll").Inc()
	job, err := b.bk.(interface {
		BulkJob(ctx context.Context, id string) (*kustomer.BulkJob, error)
	}).BulkJob(ctx, w.id)
	return err == nil && job.Done()
}

// chainDue is the earliest job w is polled given the job sent before it
// (in Kustomer's queue, w is not done before it): while that one runs and
// was found running at most once (a job found running again and again,
// maybe stuck, holds none back), not before its next poll has been
// answered (prevCh, closed then); and when Kustomer is seen to run jobs
// one after another, the gap after it (after its end, or its next poll).
// It returns the gap, and false when there is no such job or nothing to
// go by.
func (b *batcher) chainDue(w *jobWatch) (t time.Time, gap time.Duration, prevCh <-chan struct{}, ok bool) {
	b.estMu.Lock()
	gap = b.gap
	b.estMu.Unlock()
	w.mu.Lock()
	p := w.prev
	w.mu.Unlock()
	if p == nil {
		return time.Time{}, 0, nil, false
	}
	p.mu.Lock()
	due, end, misses, ch := p.due, p.end, p.misses, p.changed
	p.mu.Unlock()
	switch {
	case !end.IsZero() && gap > 0:
		return end.Add(gap), gap, nil, true
	case end.IsZero() && !due.IsZero() && (gap > 0 || misses <= 1):
		return due.Add(gap), gap, ch, true
	}
	return time.Time{}, 0, nil, false
}

// probeDue counts the jobs polled while a gap is in force and reports
// whether this one is polled at its own time instead.
func (b *batcher) probeDue() bool {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	b.probes++
	return b.probes%bulkGapProbe == 0
}

// notSerial drops the gap: a job polled at its own time was complete.
func (b *batcher) notSerial() {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	b.gap, b.votes = 0, nil
}

// shortestRun is the least time from submission a job was found complete
// in.
func (b *batcher) shortestRun() time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	return b.shortest
}

// learnGap learns the gap from job w's poll at now: found complete or
// not, at a time the gap set (chained) or the estimate did. It returns
// the gap.
func (b *batcher) learnGap(w *jobWatch, now time.Time, complete, chained bool) time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	switch {
	case chained && complete:
		if w.polls == 1 {
			if b.gap = b.gap * 99 / 100; b.gap < bulkEstimateFloor {
				b.gap, b.votes = 0, nil
			}
		}
	case chained:
		b.gap = min(b.gap*5/4, b.jobTimeout())
	case complete:
		if d := now.Sub(w.sent); b.shortest == 0 || d < b.shortest {
			b.shortest = d
		}
		end, sent := w.prevEnd()
		if end.IsZero() || !end.After(w.sent) {
			b.votes = b.votes[:0] // not in flight together
			break
		}
		after := now.Sub(end) - w.sent.Sub(sent)
		if after < b.shortest/2 {
			b.votes = b.votes[:0]
			break
		}
		if b.votes = append(b.votes, after); len(b.votes) >= bulkGapVotes {
			b.gap = max(b.gap, slices.Min(b.votes))
			b.votes = b.votes[:0]
		}
	}
	return b.gap
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
func (w *Worker) bulkWait(ctx context.Context, c claimResult) (time.Duration, error) {
	if !c.stale || c.bulkBatch == "" && c.bulkJob == "" {
		return 0, nil
	}
	rec := batchRecord{job: c.bulkJob, found: c.bulkJob != ""}
	if c.bulkBatch != "" {
		r, err := w.ledger.batchRead(ctx, c.bulkBatch)
		if err != nil {
			return 0, err
		}
		if r.found {
			rec = r
		}
	}
	if !rec.found {
		return 0, nil // never sent
	}
	now := w.cfg.Clock.Now()
	lease := w.ledger.lease
	if age := now.Sub(rec.beat); !rec.beat.IsZero() && age < lease && age > -lease {
		return lease - max(age, 0), nil
	}
	if rec.job != "" {
		if bk, ok := w.kustomer.(BulkKustomer); ok {
			if err := w.limiter.Wait(ctx); err != nil {
				return 0, err
			}
			res, err := bk.BulkResults(ctx, rec.job)
			var ke *kustomer.Error
			switch {
			case errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound:
				return 0, nil // gone: what it created is found by look-up
			case err != nil:
				return 0, err
			case res.CompleteFor(rec.count) || rec.count == 0 && res.Completed:
				return 0, nil
			}
			return max(lease/3, bulkEstimateFloor), nil
		}
	}
	sent := cmp.Or(rec.sent, rec.beat)
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
