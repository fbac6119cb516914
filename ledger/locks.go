package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// LockMatches takes a lock in the ledger on each name (see mapping.Workflow.MatchKeys), so
// that two items for the same person — two events on two replicas — are
// matched one after the other and end as one customer. A lock lasts one
// attempt, or the lease if its holder dies. It returns ErrClaimed when
// another item holds one of them (and then holds none), and the function
// that releases them.
//
// renew extends every lock by a lease from now, failing with
// ErrMatchLocked when one is no longer this attempt's (it ran out and
// another item took it).
func (l *Ledger) LockMatches(ctx context.Context, names []string) (unlock func(), renew func(context.Context) error, err error) {
	type held struct {
		key   string
		rev   uint64
		nonce string
	}
	var locks []held
	unlock = func() {
		for _, h := range locks {
			_ = l.kv.Delete(context.WithoutCancel(ctx), h.key, jetstream.LastRevision(h.rev))
		}
	}
	renew = func(ctx context.Context) error {
		for i, h := range locks {
			rev, err := l.kv.Update(ctx, h.key, l.lockValue(ctx, h.nonce), h.rev)
			if err != nil {
				return ErrMatchLocked
			}
			locks[i].rev = rev
		}
		return nil
	}
	for _, name := range names {
		key := "match." + Key("", name)[len("item."):]
		rev, nonce, err := l.lock(ctx, key)
		if err != nil {
			unlock()
			return nil, nil, err
		}
		locks = append(locks, held{key, rev, nonce})
	}
	return unlock, renew, nil
}

// lockPrefix starts a match lock's value.
const lockPrefix = "lock "

// lockValue is a match lock's value: this replica, the attempt's nonce and
// the lease's end.
func (l *Ledger) lockValue(ctx context.Context, nonce string) []byte {
	return fmt.Appendf(nil, lockPrefix+"%s/%s %d", l.owner, nonce, l.leaseEnd(ctx).UnixMilli())
}

// lock takes one match lock, or takes over an expired one.
func (l *Ledger) lock(ctx context.Context, key string) (rev uint64, nonce string, err error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonce = hex.EncodeToString(b[:])
	value := l.lockValue(ctx, nonce)
	rev, err = l.kv.Create(ctx, key, value)
	if err == nil {
		return rev, nonce, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return 0, "", fmt.Errorf("ledger: lock: %w", err)
	}
	entry, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, "", ErrMatchLocked
	case err != nil:
		return 0, "", fmt.Errorf("ledger: read: %w", err)
	}
	if _, expiry := parseOwnerExpiry(strings.TrimPrefix(string(entry.Value()), lockPrefix)); l.leaseLeft(ctx, expiry) > 0 {
		return 0, "", ErrMatchLocked
	}
	if rev, err = l.kv.Update(ctx, key, value, entry.Revision()); err != nil {
		return 0, "", ErrMatchLocked
	}
	return rev, nonce, nil
}
