package worker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// This file is one item's attempt in per-item mode, start to end: hold and
// claim its key (ledger), look the customer up, create or update it, turn
// Kustomer's answer into the loop's decision (kustomerDecision), record it.

// createItem is one attempt at one item: claim its key in the ledger, look it
// up when an earlier attempt's outcome is unknown, create it, record it. A
// workflow with match looks the customer up first (see matchItem).
func (w *Worker) createItem(ctx context.Context, f *flow, ev *event, req mapping.Request, key string, index, attempt int, note *itemNote) (loop.Result, error) {
	log := ev.log.With().Int("item", index).Int("attempt", attempt).Logger()
	enc, err := encodeBody(req)
	if err != nil {
		return loop.Result{}, loop.Permanent(err)
	}
	sum := enc.sum
	note.sent = sum
	if err := w.ledger.Hold(ctx, key); err != nil {
		return loop.Result{}, loop.RetryAfter(0, err) // shutting down
	}
	defer w.ledger.Unhold(key)
	claim, err := w.ledger.Claim(ctx, key, "")
	switch {
	case errors.Is(err, ledger.ErrClaimed):
		return loop.Result{}, loop.Later(claim.Wait, err) // not attempted: no attempt spent, no failure
	case err != nil:
		// Not Kustomer's fault: no attempt is spent and the breaker (which
		// pauses on Kustomer failing) is not told. A ledger bucket deleted
		// while running is recreated at once.
		err = fmt.Errorf("worker: idempotency ledger unavailable: %w", err)
		if ctx.Err() == nil && !w.repairStores(ctx) {
			log.Warn().Err(err).Msg("item waits for the idempotency ledger")
			return loop.Result{}, loop.Later(time.Second, err)
		}
		return loop.Result{}, loop.Later(0, err)
	case claim.CustomerID != "" && (len(f.wf.Match) == 0 || claim.Sent == sum):
		log.Info().Str("customer_id", claim.CustomerID).Msg("item already created")
		return loop.Result{CustomerID: claim.CustomerID, Attributes: enc.json, AlreadyCreated: true}, nil
	}
	wait, err := w.bulkWait(ctx, claim)
	if err != nil {
		return loop.Result{}, unresolved(fmt.Errorf("worker: bulk request holding the item unreadable: %w", err))
	} else if wait > 0 {
		// A bulk request may still create the item: no attempt spent.
		return loop.Result{}, loop.Later(wait, fmt.Errorf("worker: item waits for the bulk request %s that may create it", cmp.Or(claim.BulkBatch, claim.BulkJob)))
	}
	spend := &spender{lim: w.limiter, held: w.ledger.Keeper()}
	if claim.CustomerID == "" { // this attempt holds the claim
		spend.held.KeepClaim(key, &claim)
	}
	if len(f.wf.Match) > 0 {
		return w.matchItem(ctx, f.wf, req, enc, key, claim, spend, log, note)
	}
	return w.create(ctx, req, enc, key, claim.Stale, spend, log, note)
}

// create creates the item's customer, holding its claim; lookFirst (an
// earlier attempt's outcome is unknown) looks it up by externalId first.
func (w *Worker) create(ctx context.Context, req mapping.Request, enc body, key string, lookFirst bool, spend *spender, log zerolog.Logger, note *itemNote) (loop.Result, error) {
	sum := enc.sum
	extID := req.ExternalID()
	if lookFirst && extID != "" {
		c, err := w.lookup(ctx, extID, spend, log)
		switch {
		case err != nil:
			// Not knowing whether the earlier attempt created it, do not
			// create it again: ask again at the next attempt.
			return loop.Result{}, unresolved(err)
		case c != nil:
			note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, c.ID, sum), c.ID, log)
			return loop.Result{CustomerID: c.ID, Attributes: c.RawAttributes, AlreadyCreated: true}, nil
		}
	}
	if err := spend.wait(ctx); err != nil {
		return loop.Result{}, err
	}
	c, err := w.kustomer.CreateCustomer(ctx, enc.json)
	if err != nil {
		err = kustomerDecision(err)
		// A timeout, a broken connection or our own cancellation after the
		// request left: Kustomer may have created the customer.
		unknown := errors.Is(err, &loop.UnknownError{}) || ctx.Err() != nil
		if unknown && extID != "" {
			// The request may have been answered: ask before trying again.
			// Not found, or the question failed: the outcome stays unknown,
			// the claim stays, and the next attempt asks again.
			if c, err := w.lookup(ctx, extID, spend, log); err == nil && c != nil {
				note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, c.ID, sum), c.ID, log)
				return loop.Result{CustomerID: c.ID, Attributes: c.RawAttributes, AlreadyCreated: true}, nil
			}
		}
		if !unknown && !lookFirst {
			// Kustomer answered: this attempt created nothing, and no earlier
			// attempt's outcome is in doubt (that claim is kept, so every
			// later attempt looks the item up first).
			w.ledger.Release(context.WithoutCancel(ctx), key)
		}
		log.Warn().Err(err).Str("class", loop.DecisionName(err)).Msg("create failed")
		return loop.Result{}, err
	}
	note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, c.ID, sum), c.ID, log)
	log.Info().Str("customer_id", c.ID).Msg("customer created")
	return loop.Result{CustomerID: c.ID, Attributes: c.RawAttributes}, nil
}

// lookup finds a customer by externalId after an unknown outcome: the
// customer, nil when Kustomer has none, or the error when it could not be
// asked (a failed look-up is no answer: the customer may exist).
func (w *Worker) lookup(ctx context.Context, extID string, spend *spender, log zerolog.Logger) (*kustomer.Customer, error) {
	if err := spend.wait(ctx); err != nil {
		return nil, err
	}
	c, err := w.kustomer.CustomerByExternalID(ctx, extID)
	switch {
	case kustomer.IsNotFound(err):
		return nil, nil
	case err != nil:
		log.Warn().Err(err).Msg("look-up after an unknown outcome failed")
		return nil, err
	}
	log.Info().Str("customer_id", c.ID).Msg("unknown outcome resolved by look-up: customer exists")
	return c, nil
}

// matchLockRetry is how soon an item whose match key another item holds is
// tried again: the holder keeps it for a few requests only.
const matchLockRetry = 250 * time.Millisecond

// itemNote is what one item's attempts tell the run record and the result
// besides the loop's outcome. Only the item's own attempts write it, one at
// a time.
type itemNote struct {
	sent       string   // bodyHash of the body last sent, or matched, for the item
	dropped    []string // what an update did not send, each with its reason (Kustomer's 10 per list, the customer's own externalId)
	unrecorded unrecorded
}

// unrecorded is set once a customer exists in Kustomer (created, updated
// or found) but the ledger could not record it: the event must then not
// be acknowledged, so that its redelivery looks the customer up. An item's
// note holds one (per-item mode), as do a bulk item, its outcome and its
// event (bulk mode).
type unrecorded bool

// note notes what ledger.Record returned for customer id, and logs it when
// the customer was not recorded.
func (u *unrecorded) note(err error, id string, log zerolog.Logger) {
	if err != nil {
		log.Error().Err(err).Str("customer_id", id).Msg("customer not recorded in the ledger; the event is not acknowledged, and its redelivery looks the customer up")
		*u = true
	}
}

// body is a mapped item encoded once: the JSON sent to Kustomer (and
// passed on in its result when Kustomer's answer has none), and its hash,
// which the ledger keeps to tell a redelivered item from a changed one.
type body struct {
	json json.RawMessage
	sum  string
}

// encodeBody encodes req. encoding/json sorts map keys, so equal bodies
// hash alike.
func encodeBody(req mapping.Request) (body, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return body{}, fmt.Errorf("worker: encode the mapped customer: %w", err)
	}
	sum := sha256.Sum256(b)
	return body{json: b, sum: hex.EncodeToString(sum[:16])}, nil
}

// spender hands out the rate budget of one attempt: the loop waited on the
// limiter once before the attempt, which pays for its first request; every
// further request (a look-up, then a create or an update) waits for a token
// of its own, so the limiter counts every request sent. Before each, held
// renews the attempt's claim and match locks when due (see ledger.Keeper),
// failing rather than send it when another replica took one over.
type spender struct {
	lim  *loop.Limiter
	paid bool
	held *ledger.Keeper
}

func (s *spender) wait(ctx context.Context) error {
	if !s.paid {
		s.paid = true
		return nil
	}
	if err := s.lim.Wait(ctx); err != nil {
		return err
	}
	if err := s.held.Renew(ctx); err != nil {
		return loop.Later(0, err)
	}
	return nil
}

// matchItem is one attempt at an item of a workflow with match: claim its
// match keys, look the customer up by them in order, then create it, or
// skip or update the customer found. claim is the item's idempotency claim:
// owned when claim.CustomerID is empty, else the ledger's record of an
// earlier body (claim.Sent differs from sum).
func (w *Worker) matchItem(ctx context.Context, wf *mapping.Workflow, req mapping.Request, enc body, key string, claim ledger.Claim, spend *spender, log zerolog.Logger, note *itemNote) (loop.Result, error) {
	sum := enc.sum
	if claim.CustomerID != "" && wf.OnMatch != mapping.OnMatchUpdate {
		// Changed since it was sent, but the workflow leaves customers as they are.
		note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, claim.CustomerID, sum), claim.CustomerID, log)
		log.Info().Str("customer_id", claim.CustomerID).Msg("item changed; customer left as it is (on_match: skip)")
		return loop.Result{CustomerID: claim.CustomerID, Attributes: enc.json, Status: outcome.Skipped}, nil
	}
	giveUp := func(err error) (loop.Result, error) {
		// A stale claim is kept: the next attempt must look up again.
		if claim.CustomerID == "" && !claim.Stale {
			w.ledger.Release(context.WithoutCancel(ctx), key)
		}
		return loop.Result{}, err
	}
	unlock, renewLocks, err := w.ledger.LockMatches(ctx, wf.MatchKeys(req))
	if errors.Is(err, ledger.ErrClaimed) {
		return giveUp(loop.Later(matchLockRetry, err))
	} else if err != nil {
		return giveUp(loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", err)))
	}
	defer unlock()
	spend.held.Keep(renewLocks)
	found, err := w.findCustomer(ctx, wf, req, claim, spend, log)
	if err != nil {
		return giveUp(err)
	}
	id := claim.CustomerID
	if found != nil {
		id = found.ID
	}
	if id == "" {
		lookFirst := claim.Stale && !slices.Contains(wf.Match, mapping.MatchExternalID)
		return w.create(ctx, req, enc, key, lookFirst, spend, log, note)
	}
	if wf.OnMatch != mapping.OnMatchUpdate {
		note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, id, sum), id, log)
		log.Info().Str("customer_id", id).Msg("customer exists; left as it is (on_match: skip)")
		return loop.Result{CustomerID: id, Attributes: found.RawAttributes, Status: outcome.Skipped}, nil
	}
	var existing map[string]any
	if found != nil {
		existing = found.Attributes
	}
	body, dropped := mapping.MergeLists(req, existing, found != nil)
	note.dropped = dropped
	if err := spend.wait(ctx); err != nil {
		return giveUp(err)
	}
	c, err := w.kustomer.UpdateCustomer(ctx, id, body)
	if err != nil {
		err = kustomerDecision(err)
		log.Warn().Err(err).Str("class", kustomer.ClassOf(err).String()).Str("customer_id", id).Msg("update failed")
		return giveUp(err)
	}
	note.unrecorded.note(w.ledger.Record(context.WithoutCancel(ctx), key, c.ID, sum), c.ID, log)
	log.Info().Str("customer_id", c.ID).Int("dropped", len(dropped)).Msg("customer updated")
	return loop.Result{CustomerID: c.ID, Attributes: c.RawAttributes, Status: outcome.Updated}, nil
}

// findCustomer looks the item's customer up by the workflow's match keys in
// order and returns the first found, or nil. The externalId look-up is left
// out for an item the ledger has never seen when the workflow declares
// fresh_ids: such an id cannot be in Kustomer yet.
func (w *Worker) findCustomer(ctx context.Context, wf *mapping.Workflow, req mapping.Request, claim ledger.Claim, spend *spender, log zerolog.Logger) (*kustomer.Customer, error) {
	for _, k := range wf.Match {
		v := req.MatchValue(k)
		if v == "" || k == mapping.MatchExternalID && wf.FreshIDs && claim.CustomerID == "" && !claim.Stale {
			continue
		}
		if err := spend.wait(ctx); err != nil {
			return nil, err
		}
		c, err := lookupBy(ctx, w.kustomer, k, v)
		switch {
		case err == nil:
			log.Info().Str("customer_id", c.ID).Str("match", k).Msg("existing customer found")
			return c, nil
		case !kustomer.IsNotFound(err):
			err = kustomerDecision(err)
			log.Warn().Err(err).Str("match", k).Msg("look-up failed")
			return nil, err
		}
	}
	return nil, nil
}

func lookupBy(ctx context.Context, k Kustomer, key, value string) (*kustomer.Customer, error) {
	switch key {
	case mapping.MatchEmail:
		return k.CustomerByEmail(ctx, value)
	case mapping.MatchPhone:
		return k.CustomerByPhone(ctx, value)
	default:
		return k.CustomerByExternalID(ctx, value)
	}
}
