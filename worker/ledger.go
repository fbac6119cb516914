package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// LedgerBucketDefault is the KV bucket that records created items.
	LedgerBucketDefault = "KSYNC_LEDGER"
	// LedgerTTLDefault is how long a created item is remembered.
	LedgerTTLDefault = 7 * 24 * time.Hour
	// LeaseDefault is how long a replica's claim on an item lasts if the
	// replica dies before recording the outcome. A claim is held only for one
	// Kustomer request, so it must exceed the client's timeout.
	LeaseDefault = 30 * time.Second
)

// errClaimed means another replica is creating the same item right now.
var errClaimed = errors.New("worker: item is being created by another replica")

// LedgerConfig configures the idempotency ledger.
type LedgerConfig struct {
	Bucket   string        // default LedgerBucketDefault
	TTL      time.Duration // default LedgerTTLDefault
	Lease    time.Duration // default LeaseDefault
	Replicas int           // default 1
}

// ledger records, per idempotency key, the Kustomer id of the customer that
// was created for it, so a redelivered or replayed item is not created twice.
//
// A key goes through two states: "claim:<owner>" (written with create-if-absent
// and a per-key TTL, the lease, before calling Kustomer) and "created:<id>"
// (written after Kustomer answered 201). A claim left by a dead replica expires
// after the lease; the next delivery then looks the customer up by externalId
// when it has one, since the dead replica's request may have been answered.
type ledger struct {
	kv    jetstream.KeyValue
	lease time.Duration
	owner string
}

func openLedger(ctx context.Context, js jetstream.JetStream, cfg LedgerConfig, owner string) (*ledger, error) {
	cfg.Bucket = cmpOr(cfg.Bucket, LedgerBucketDefault)
	if cfg.TTL == 0 {
		cfg.TTL = LedgerTTLDefault
	}
	if cfg.Lease == 0 {
		cfg.Lease = LeaseDefault
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "kustomer-sync: customers created per idempotency key",
		TTL:            cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       max(cfg.Replicas, 1),
		LimitMarkerTTL: cfg.Lease,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: ledger bucket %s: %w", cfg.Bucket, err)
	}
	return &ledger{kv: kv, lease: cfg.Lease, owner: owner}, nil
}

// ledgerKey turns an idempotency key of any text into a valid KV key.
func ledgerKey(workflow, key string) string {
	sum := sha256.Sum256([]byte(key))
	return workflow + "." + hex.EncodeToString(sum[:16])
}

// claimResult is what claim found.
type claimResult struct {
	customerID string // set when the item was created before
	stale      bool   // a previous claim expired or was ours: the outcome of an earlier attempt is unknown
}

// claim takes the key for this replica. It returns the recorded customer id
// when the item was created before, errClaimed when another replica holds a
// live claim, and otherwise owns the key until record or release.
func (l *ledger) claim(ctx context.Context, key string) (claimResult, error) {
	value := []byte("claim:" + l.owner)
	_, err := l.kv.Create(ctx, key, value, jetstream.KeyTTL(l.lease))
	if err == nil {
		return claimResult{}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return claimResult{}, fmt.Errorf("worker: ledger claim: %w", err)
	}
	entry, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Expired or deleted between the two calls: try once more.
		if _, err := l.kv.Create(ctx, key, value, jetstream.KeyTTL(l.lease)); err == nil {
			return claimResult{stale: true}, nil
		}
		return claimResult{}, errClaimed
	}
	if err != nil {
		return claimResult{}, fmt.Errorf("worker: ledger read: %w", err)
	}
	v := string(entry.Value())
	switch {
	case strings.HasPrefix(v, "created:"):
		return claimResult{customerID: strings.TrimPrefix(v, "created:")}, nil
	case v == string(value):
		// Our own earlier claim (a retry after an unknown outcome, or a
		// redelivery to this same replica): renew it.
		if _, err := l.kv.Update(ctx, key, value, entry.Revision()); err != nil {
			return claimResult{}, errClaimed
		}
		return claimResult{stale: true}, nil
	default:
		return claimResult{}, errClaimed
	}
}

// record stores the created customer's id under key.
func (l *ledger) record(ctx context.Context, key, customerID string) error {
	if _, err := l.kv.Put(ctx, key, []byte("created:"+customerID)); err != nil {
		return fmt.Errorf("worker: ledger record: %w", err)
	}
	return nil
}

// release gives up a claim after a failure Kustomer answered (the customer
// was certainly not created), so a later attempt can claim it at once.
func (l *ledger) release(ctx context.Context, key string) {
	entry, err := l.kv.Get(ctx, key)
	if err != nil || string(entry.Value()) != "claim:"+l.owner {
		return
	}
	_ = l.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
}
