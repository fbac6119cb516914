package worker

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"
	"github.com/sourcegraph/conc/pool"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/bulkpace"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

const (
	// bulkEstimateFloor is the least wait between two tries of a bulk
	// request or poll: the pacer's least estimate.
	bulkEstimateFloor = bulkpace.FloorDefault
	// bulkLedgerParallel bounds the ledger operations of one batch in flight.
	bulkLedgerParallel = 16
	// bulkJobsInFlight times the batch size bounds the items a bulk
	// workflow holds (its events' items, waiting, in a batch or in a job
	// followed): the memory of a replica goes with it, not with the
	// backlog. Enough to keep the budget busy with jobs of seconds.
	bulkJobsInFlight = 100
	// bulkShareTimeout bounds the ledger write sharing what a pacer
	// learnt.
	bulkShareTimeout = 5 * time.Second
)

// BulkKustomer is what a bulk workflow needs of a Kustomer client besides
// [Kustomer]; *kustomer.Client has it.
type BulkKustomer interface {
	CreateCustomersBulk(ctx context.Context, items []kustomer.BulkItem) (*kustomer.BulkJob, error)
	BulkResults(ctx context.Context, id string) (*kustomer.BulkResults, error)
	BulkJob(ctx context.Context, id string) (*kustomer.BulkJob, error)
}

// bulkOutcome is one item's outcome in bulk mode: the loop's, and the bulk
// job that decided it.
type bulkOutcome struct {
	loop.Outcome
	job        string
	unrecorded unrecorded
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
	unrecorded unrecorded

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

	// pace times the polls of the jobs followed.
	pace *bulkpace.Pacer

	watchMu sync.Mutex
	watches map[string]*jobWatch // the jobs followed, by id

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
	size := min(max(f.wf.BatchSize, 1), kustomer.BulkMax)
	return &batcher{
		w: w, f: f, bk: bk,
		policy:  retryPolicy(f.wf.Retry),
		size:    size,
		linger:  f.wf.Linger,
		active:  map[string]bool{},
		blocked: map[string][]*bulkItem{},
		wake:    make(chan struct{}, 1),
		pace: bulkpace.New(bulkpace.Config{
			Timeout: cmp.Or(f.wf.BulkJobTimeout, mapping.BulkJobTimeoutDefault),
			OnEstimate: func(d time.Duration) {
				w.metrics.BulkEstimate.WithLabelValues(f.wf.Name).Set(d.Seconds())
			},
			OnLearn: func(l bulkpace.Learnt) { w.sharePace(f, l) },
			Sends:   &w.bulkFeed,
		}),
		watches:  map[string]*jobWatch{},
		maxItems: size * bulkJobsInFlight,
		room:     make(chan struct{}),
	}, nil
}

// followBulk follows, while ctx lasts, the bulk requests every replica
// records and what the bulk workflows' replicas learnt of their jobs'
// durations: the pacers count the whole deployment's jobs in Kustomer's
// queue, and start from, and keep up with, the deployment's estimate.
func (w *Worker) followBulk(ctx context.Context) {
	if !slices.ContainsFunc(w.flows, func(f *flow) bool { return f.bulk != nil }) {
		return
	}
	flows := w.flows
	w.wg.Go(func() {
		err := w.ledger.FollowBulk(ctx, &w.bulkFeed, func(name string, v []byte) {
			var l bulkpace.Learnt
			if l.UnmarshalText(v) != nil {
				return
			}
			for _, f := range flows {
				if f.bulk != nil && f.wf.Name == name {
					f.bulk.pace.Adopt(l)
				}
			}
		})
		if err != nil {
			w.log.Warn().Err(err).Msg("bulk requests of other replicas not followed: each bulk workflow paces its polls on its own")
		}
	})
}

// sharePace records what f's pacer learnt for its other replicas.
func (w *Worker) sharePace(f *flow, l bulkpace.Learnt) {
	ctx, cancel := context.WithTimeout(context.Background(), bulkShareTimeout)
	defer cancel()
	v, _ := l.MarshalText()
	if err := w.ledger.SharePace(ctx, f.wf.Name, v); err != nil {
		f.log.Warn().Err(err).Msg("bulk job durations not shared with the other replicas")
	}
}

// runBulk is handle's bulk counterpart of loop.Runner.Run: it gives the
// event's items to the workflow's batcher and waits until each has an
// outcome (handle's keepAlive keeps the event alive meanwhile). It sets ev.bulkJobs to the
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
	// Each item leaves the bound as it gets its outcome, so that an event
	// as large as the bound does not hold back the events behind it until
	// its last item is done.
	held := len(indexes)
	defer func() { f.bulk.unadmit(held) }()
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
	f.bulk.release(held - len(items)) // not encodable: settled already
	held = len(items)
	f.bulk.add(tracing.Detach(ctx), items)
	for got := 0; got < len(items); {
		select {
		case o := <-done:
			got++
			held--
			f.bulk.release(1)
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
		b.wg.Go(b.run)
	}
	b.mu.Unlock()
	signal(b.wake)
}

// wait returns once the batcher's goroutines have ended.
func (b *batcher) wait() { b.wg.Wait() }

// run forms batches: a full one at once, a partial one when its oldest item
// has waited Linger. It takes the request's rate unit before it takes the
// items, so that a batch waiting for the budget fills meanwhile. It ends when
// nothing is left.
func (b *batcher) run() {
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
		if !b.w.ledger.TryHold(it.key) {
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
	b.w.ledger.Unhold(it.key)
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
	it.unrecorded.note(err, id, it.log)
}

func (it *bulkItem) result(status outcome.Outcome) bulkOutcome {
	return bulkOutcome{job: it.job, unrecorded: it.unrecorded, Outcome: loop.Outcome{
		Index: it.index, Status: status, Attempts: it.attempts,
		Err: it.err, FirstFailure: it.first, LastFailure: it.last,
	}}
}

// settle acts on a failed attempt's decision d as the Loop does, through
// the one decision both modes share (loop.Policy.Next): try the item again
// in a later batch (no attempt spent for a Later), pause, or fail it.
func (b *batcher) settle(it *bulkItem, d error) {
	now := b.w.cfg.Clock.Now()
	step := b.policy.Next(d, it.attempts, rand.Float64())
	if step.Kind == loop.StepLater {
		// Not attempted (another replica holds the item): no failure.
		b.delay(it, now.Add(step.Delay))
		return
	}
	if it.first.IsZero() {
		it.first = now
	}
	it.last, it.err = now, d
	switch step.Kind {
	case loop.StepRetry:
		b.delay(it, now.Add(step.Delay))
	case loop.StepPause:
		b.finish(it, outcome.Paused, "")
	case loop.StepExhausted:
		b.finish(it, outcome.Exhausted, "")
	default: // StepPermanent; settle is given failures only
		b.finish(it, outcome.Permanent, "")
	}
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
// them with judge's decision on the limiter's error, and reports false.
func (b *batcher) unit(ctx context.Context, items []*bulkItem, judge func(error) error) bool {
	err := b.w.limiter.Wait(ctx)
	switch {
	case err == nil:
		return true
	case ctx.Err() != nil:
		b.cancel(items)
	default:
		for _, it := range items {
			it.attempts++
			b.settle(it, judge(err))
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
