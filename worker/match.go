package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// maxListItems is Kustomer's limit on every array of a customer (emails,
// phones, …): a merged list is cut to it.
const maxListItems = 10

// matchLockRetry is how soon an item whose match key another item holds is
// tried again: the holder keeps it for a few requests only.
const matchLockRetry = 250 * time.Millisecond

// itemNote is what one item's attempts tell the run record and the result
// besides the loop's outcome. Only the item's own attempts write it, one at
// a time.
type itemNote struct {
	sent    string   // bodyHash of the body last sent, or matched, for the item
	dropped []string // what an update did not send, each with its reason (Kustomer's 10 per list, the customer's own externalId)
	// unrecorded: the customer exists but the ledger could not record it, so
	// the event must not be acknowledged: its redelivery looks it up.
	unrecorded bool
}

// recorded notes what record returned for the item's customer id.
func (n *itemNote) recorded(err error, id string, log zerolog.Logger) {
	n.unrecorded = n.unrecorded || notRecorded(err, id, log)
}

// notRecorded reports whether err, record's, left the customer id out of
// the ledger, and logs it if so.
func notRecorded(err error, id string, log zerolog.Logger) bool {
	if err != nil {
		log.Error().Err(err).Str("customer_id", id).Msg("customer not recorded in the ledger; the event is not acknowledged, and its redelivery looks the customer up")
	}
	return err != nil
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
		note.recorded(w.ledger.Record(context.WithoutCancel(ctx), key, claim.CustomerID, sum), claim.CustomerID, log)
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
	unlock, renewLocks, err := w.ledger.LockMatches(ctx, matchLocks(wf, req))
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
		note.recorded(w.ledger.Record(context.WithoutCancel(ctx), key, id, sum), id, log)
		log.Info().Str("customer_id", id).Msg("customer exists; left as it is (on_match: skip)")
		return loop.Result{CustomerID: id, Attributes: found.RawAttributes, Status: outcome.Skipped}, nil
	}
	var existing map[string]any
	if found != nil {
		existing = found.Attributes
	}
	body, dropped := mergeLists(req, existing, found != nil)
	note.dropped = dropped
	if err := spend.wait(ctx); err != nil {
		return giveUp(err)
	}
	c, err := w.kustomer.UpdateCustomer(ctx, id, body)
	if err != nil {
		err = decide(err)
		log.Warn().Err(err).Str("class", kustomer.ClassOf(err).String()).Str("customer_id", id).Msg("update failed")
		return giveUp(err)
	}
	note.recorded(w.ledger.Record(context.WithoutCancel(ctx), key, c.ID, sum), c.ID, log)
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
			err = decide(err)
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

// matchLocks names the ledger locks of the item's match values, e.g.
// "email:ada@example.com", sorted so that items take them in one order.
func matchLocks(wf *mapping.Workflow, req mapping.Request) []string {
	var names []string
	for _, k := range wf.Match {
		if v := req.MatchValue(k); v != "" {
			if k == mapping.MatchEmail {
				v = strings.ToLower(v)
			}
			names = append(names, k+":"+v)
		}
	}
	slices.Sort(names)
	return names
}

// mergeLists returns the body of an update: req, with each of its lists
// (emails, phones, tags, …) merged into the customer's, since a list sent
// replaces Kustomer's: the customer's entries first, then req's new ones,
// cut to maxListItems. dropped names each new entry that did not fit, with
// its reason, as "emails: ada@example.com (Kustomer keeps at most 10 per list)". When the customer's lists are unknown (known
// is false), req's lists are left out rather than replacing them, and named
// in dropped. A customer's externalId is never replaced by another.
func mergeLists(req mapping.Request, existing map[string]any, known bool) (mapping.Request, []string) {
	body := make(mapping.Request, len(req))
	var dropped []string
	for field, v := range req {
		if old, _ := existing[field].(string); field == "externalId" && old != "" && old != v {
			// The customer's identity in the source stays; the item matched it by another key.
			dropped = append(dropped, fmt.Sprintf("externalId: %v (the customer, found by another match key, keeps its own: %s)", v, old))
			continue
		}
		list, ok := v.([]any)
		if !ok {
			body[field] = v
			continue
		}
		if !known {
			for _, it := range list {
				_, id := mapping.ListEntry(field, it)
				dropped = append(dropped, field+": "+id+" (the customer's current list could not be read)")
			}
			continue
		}
		old, _ := existing[field].([]any)
		merged := make([]any, 0, maxListItems)
		seen := make(map[string]bool, len(old)+len(list))
		for _, it := range old {
			entry, id := mapping.ListEntry(field, it)
			merged = append(merged, entry)
			seen[id] = true
		}
		for _, it := range list {
			_, id := mapping.ListEntry(field, it)
			switch {
			case seen[id]:
			case len(merged) >= maxListItems:
				dropped = append(dropped, field+": "+id+" (Kustomer keeps at most 10 per list)")
			default:
				merged = append(merged, it)
			}
			seen[id] = true
		}
		body[field] = merged
	}
	slices.Sort(dropped)
	return body, dropped
}
