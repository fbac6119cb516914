package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sourcegraph/conc"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// runBatch makes one batch's items durable: claim each key, follow the job
// of an earlier request that holds an item, look up an item whose earlier
// attempt's outcome is unknown, send the rest in one bulk request and
// follow it. The caller holds one rate unit for the request.
func (b *batcher) runBatch(ctx context.Context, batch []*bulkItem) {
	l := b.w.ledger
	claims := make([]ledger.Claim, len(batch))
	errs := make([]error, len(batch))
	pos := make(map[*bulkItem]int, len(batch))
	for i, it := range batch {
		pos[it] = i
	}
	// The request's token goes into every new claim; the job id Kustomer
	// gives the request is then recorded once, under the token.
	token := ledger.NewBatchToken()
	each(batch, func(it *bulkItem) {
		i := pos[it]
		claims[i], errs[i] = l.Claim(ctx, it.key, token)
	})
	var send, lookups []*bulkItem
	stale := map[*bulkItem]bool{} // claimed earlier: their claims name another request
	earlier := map[earlierKey][]*bulkItem{}
	for i, it := range batch {
		c, err := claims[i], errs[i]
		if err == nil && c.Stale {
			stale[it] = true
		}
		switch {
		case ctx.Err() != nil:
			b.cancel([]*bulkItem{it})
		case errors.Is(err, ledger.ErrClaimed):
			b.settle(it, loop.Later(c.Wait, err)) // not attempted: no attempt spent
		case err != nil:
			it.attempts++
			b.settle(it, loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
		case c.CustomerID != "":
			it.log.Info().Str("customer_id", c.CustomerID).Msg("item already created")
			b.finish(it, outcome.AlreadyCreated, c.CustomerID)
		case c.Stale && (c.BulkBatch != "" || c.BulkJob != ""):
			k := earlierKey{token: c.BulkBatch, job: c.BulkJob}
			earlier[k] = append(earlier[k], it)
		case c.Stale && it.req.ExternalID() != "":
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
		b.w.metrics.BulkRequests.WithLabelValues(b.f.wf.Name, "lookup").Inc()
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
			it.recorded(l.Record(context.WithoutCancel(ctx), it.key, c.ID, it.body.sum), c.ID)
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
		if err := b.w.ledger.ClaimForBatch(context.WithoutCancel(ctx), it.key, token); err != nil {
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
	rec := ledger.BatchRecord{Job: k.job, Found: k.job != ""}
	if k.token != "" {
		var err error
		if rec, err = b.w.ledger.BatchRead(ctx, k.token); err != nil {
			for _, it := range items {
				it.attempts++
				b.settle(it, loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
			}
			return nil, nil
		}
		if !rec.Found && k.job != "" {
			rec.Job, rec.Found = k.job, true
		}
	}
	if !rec.Found {
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
	lease := b.w.ledger.Lease()
	if age := now.Sub(rec.Beat); !rec.Beat.IsZero() && rec.Owner != b.w.ledger.Owner() && age < lease && age > -lease {
		// Another replica follows the request (or still waits for its
		// answer): its items are its to settle.
		for _, it := range items {
			b.settle(it, loop.Later(lease-max(age, 0), fmt.Errorf("worker: bulk request %s is followed by replica %s", k.token, rec.Owner)))
		}
		return nil, nil
	}
	if rec.Job != "" {
		for _, it := range items {
			it.job = rec.Job
		}
		return b.resume(ctx, b.watch(ctx, rec.Job, k.token, rec.Count, rec.Sent, false), items), nil
	}
	// Sent without an answer: the job, if Kustomer queued one, is unknown.
	until := b.unknownUntil(rec.Sent)
	if now.Before(until) {
		b.f.log.Info().Str("bulk_request", k.token).Time("sent", rec.Sent).Time("until", until).Int("items", len(items)).
			Msg("bulk request sent without an answer: its items wait until Kustomer can no longer be running its job")
		for _, it := range items {
			b.settle(it, loop.Later(until.Sub(now), fmt.Errorf("worker: bulk request %s sent at %s got no answer", k.token, rec.Sent.UTC().Format(time.RFC3339))))
		}
		return nil, nil
	}
	for _, it := range items {
		if it.req.ExternalID() != "" {
			lookups = append(lookups, it)
			continue
		}
		it.err = loop.Unknown(fmt.Errorf("worker: bulk request %s sent at %s got no answer and the item has no externalId to look it up by: "+
			"outcome unknown, the customer may exist; not sent again, to avoid a duplicate", k.token, rec.Sent.UTC().Format(time.RFC3339)))
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
		token = ledger.NewBatchToken()
		b.claimFor(ctx, token, items)
	}
	if !haveUnit && !b.unit(ctx, items, func(err error) error { return loop.RetryAfter(0, err) }) {
		return
	}
	// Recorded before it is sent: after a crash, a replica taking the
	// items over knows the request may have become a job, and since when.
	sent, err := b.w.ledger.BatchSending(context.WithoutCancel(ctx), token, len(items))
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
	b.w.metrics.BulkRequests.WithLabelValues(b.f.wf.Name, "submit").Inc()
	b.w.metrics.BulkBatchItems.WithLabelValues(b.f.wf.Name).Observe(float64(len(items)))
	ctx, span := b.traceBulkRequest(ctx, items)
	defer span.End()
	job, err := b.bk.CreateCustomersBulk(ctx, bulk)
	if err != nil {
		b.rejected(ctx, items, token, sent, err)
		return
	}
	// An accepted request tells the breaker nothing yet: the items'
	// outcomes in the job do (apply).
	span.SetAttributes(tracing.AttrBulkJob.String(job.ID))
	log := b.f.log.With().Str("bulk_job", job.ID).Logger()
	for _, it := range items {
		it.job = job.ID
	}
	if err := b.w.ledger.BatchSent(context.WithoutCancel(ctx), token, job.ID, len(items), sent); err != nil {
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
	d := kustomerDecision(err)
	b.f.breaker.Record(d)
	if n, ok := kustomer.BulkRejectedItem(err); ok && n < len(items) {
		// Kustomer named the bad item: it alone fails, the others go again.
		bad := items[n]
		b.w.ledger.Release(context.WithoutCancel(ctx), bad.key)
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
	b.f.log.Warn().Err(err).Int("items", len(items)).Str("class", loop.DecisionName(d)).Msg("bulk request failed")
	for _, it := range items {
		b.w.ledger.Release(context.WithoutCancel(ctx), it.key)
		b.settle(it, d)
	}
}
