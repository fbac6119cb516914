package ledger

import (
	"context"
	"time"
)

// Keeper keeps what one attempt holds in the ledger (its claim, its match
// locks) alive while the attempt waits: a wait for the rate budget may
// outlast a lease (a 429 pauses everyone for up to a window), so before
// each request the attempt calls [Keeper.Renew], which renews them when a
// third of a lease or more has passed since they were taken or last
// renewed. A nil Keeper holds nothing.
type Keeper struct {
	l       *Ledger
	renew   []func(context.Context) error
	renewed time.Time
}

// Keeper returns a Keeper holding nothing yet.
func (l *Ledger) Keeper() *Keeper { return &Keeper{l: l} }

// KeepClaim adds the claim c on key (this replica's, from [Ledger.Claim]),
// taken now.
func (k *Keeper) KeepClaim(key string, c *Claim) {
	k.Keep(func(ctx context.Context) error { return k.l.Renew(ctx, key, c) })
}

// Keep adds what renew renews (the renew function [Ledger.LockMatches]
// returns, say), taken now.
func (k *Keeper) Keep(renew func(context.Context) error) {
	k.renew = append(k.renew, renew)
	k.renewed = k.l.now()
}

// Renew renews everything k keeps if a third of a lease or more has passed
// since it was taken or last renewed. It fails with an [ErrClaimed] when
// one of them is no longer this attempt's (it ran out and another replica
// took it over): the attempt must then not send its request.
func (k *Keeper) Renew(ctx context.Context) error {
	if k == nil || len(k.renew) == 0 {
		return nil
	}
	now := k.l.now()
	if now.Sub(k.renewed) < k.l.lease/3 {
		return nil
	}
	for _, renew := range k.renew {
		if err := renew(ctx); err != nil {
			return err
		}
	}
	k.renewed = now
	return nil
}
