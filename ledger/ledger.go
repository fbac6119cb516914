// Package ledger is kustomer-sync's idempotency ledger: per item, the claim
// of the replica creating it (naming the bulk request it is sent in), the
// record of the customer created, lease renewal on the NATS server's clock,
// and the match locks that make two items for one person one customer.
package ledger

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/tracing"
)

const (
	// BucketDefault is the KV bucket that records created items.
	BucketDefault = "KSYNC_LEDGER"
	// TTLDefault is how long a created item is remembered.
	TTLDefault = 7 * 24 * time.Hour
	// LeaseDefault is how long a replica's claim on an item lasts if the
	// replica dies before recording the outcome. A claim is held only for one
	// Kustomer request, so it must exceed the client's timeout.
	LeaseDefault = 30 * time.Second
)

// offsetRefresh is how often, on its own clock, a replica measures again
// how far its clock is from the NATS server's (see ledger.serverNow).
const offsetRefresh = 10 * time.Minute

// RecordTries and recordRetryWait bound record's attempts: 0.1 s, 0.3 s
// and 0.9 s apart.
const (
	RecordTries     = 4
	recordRetryWait = 100 * time.Millisecond
)

// Config configures the idempotency ledger; zero fields take the defaults.
type Config struct {
	Bucket   string        // default BucketDefault
	TTL      time.Duration // default TTLDefault
	Lease    time.Duration // default LeaseDefault
	Replicas int           // default 1

	// WrapKV, when set, wraps the bucket the ledger writes to (tests use it
	// to make writes fail as a JetStream leader change does).
	WrapKV func(jetstream.KeyValue) jetstream.KeyValue
}

// Ledger records, per idempotency key, the Kustomer id of the customer that
// was created for it, so a redelivered or replayed item is not created twice.
//
// A key goes through two states: "claim <owner> <expiry>" (written with
// create-if-absent before calling Kustomer, so two replicas never create the
// same item at once) and "created <id>" (written after Kustomer answered
// 201). A claim whose replica died stays until its lease ends; the next
// claimer then takes it over and knows the earlier outcome is unknown, so it
// looks the customer up by externalId before creating again.
//
// A claim's expiry is on the NATS server's clock, as the claimer estimates
// it (serverNow: its own clock and the offset it measured from the
// server's), and a reader compares it with its own estimate of the
// server's clock: replicas whose clocks disagree agree on when a lease
// ends. (Before, each wrote and read its own clock: with a minute of skew,
// live claims were taken over.)
type Ledger struct {
	kv    jetstream.KeyValue
	lease time.Duration
	owner string
	now   func() time.Time

	// offset is the server's clock minus this replica's, measured at
	// offsetAt (this replica's time); refreshed every offsetRefresh.
	offsetMu sync.Mutex
	offset   time.Duration
	offsetAt time.Time

	// held are the keys an attempt of this process is working on. A claim
	// names the replica, not the attempt, so without this a second delivery
	// of an event handled while the first one's attempt still runs (JetStream
	// redelivers when a NATS restart loses the ack state) would take the
	// live claim of its own replica over as stale and create the item again.
	heldMu sync.Mutex
	held   map[string]chan struct{} // closed when the holder lets go
}

// Hold reserves key for one attempt of this process, waiting while another
// attempt of this process holds it (one Kustomer request at most), so the
// second attempt then finds what the first recorded. Unhold gives it back.
func (l *Ledger) Hold(ctx context.Context, key string) error {
	for {
		busy := l.acquire(key)
		if busy == nil {
			return nil
		}
		select {
		case <-busy:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TryHold is Hold without the wait: it reports false when another attempt
// of this process holds key.
func (l *Ledger) TryHold(key string) bool { return l.acquire(key) == nil }

// acquire reserves key for the caller and returns nil, or, when another
// attempt of this process holds it, a channel closed when that one lets go.
func (l *Ledger) acquire(key string) (busy <-chan struct{}) {
	l.heldMu.Lock()
	defer l.heldMu.Unlock()
	if done, ok := l.held[key]; ok {
		return done
	}
	if l.held == nil {
		l.held = map[string]chan struct{}{}
	}
	l.held[key] = make(chan struct{})
	return nil
}

func (l *Ledger) Unhold(key string) {
	l.heldMu.Lock()
	defer l.heldMu.Unlock()
	if done, ok := l.held[key]; ok {
		close(done)
		delete(l.held, key)
	}
}

func Open(ctx context.Context, js jetstream.JetStream, cfg Config, owner string, now func() time.Time) (*Ledger, error) {
	cfg.Bucket = cmp.Or(cfg.Bucket, BucketDefault)
	if cfg.TTL == 0 {
		cfg.TTL = TTLDefault
	}
	if cfg.Lease == 0 {
		cfg.Lease = LeaseDefault
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "kustomer-sync: customers created per idempotency key",
		TTL:         cfg.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: bucket %s: %w", cfg.Bucket, err)
	}
	if cfg.WrapKV != nil {
		kv = cfg.WrapKV(kv)
	}
	l := &Ledger{kv: kv, lease: cfg.Lease, owner: owner, now: now}
	if err := l.measureOffset(ctx); err != nil {
		return nil, fmt.Errorf("ledger: bucket %s: %w", cfg.Bucket, err)
	}
	return l, nil
}

// measureOffset measures how far this replica's clock is from the NATS
// server's: the server's time in the bucket's stream info, against the
// middle of the request on this replica's clock.
func (l *Ledger) measureOffset(ctx context.Context) error {
	before := l.now()
	st, err := l.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("read the server's time: %w", err)
	}
	after := l.now()
	kvs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || kvs.StreamInfo() == nil || kvs.StreamInfo().TimeStamp.IsZero() {
		return errors.New("read the server's time: the server does not tell it")
	}
	local := before.Add(after.Sub(before) / 2)
	l.offsetMu.Lock()
	l.offset, l.offsetAt = kvs.StreamInfo().TimeStamp.Sub(local), local
	l.offsetMu.Unlock()
	return nil
}

// serverNow is the NATS server's time now, as this replica estimates it
// from its own clock and the offset last measured, measured again when
// offsetRefresh has passed (if that fails, the last one serves).
func (l *Ledger) serverNow(ctx context.Context) time.Time {
	l.offsetMu.Lock()
	stale := l.now().Sub(l.offsetAt) >= offsetRefresh
	l.offsetMu.Unlock()
	if stale {
		_ = l.measureOffset(ctx)
	}
	l.offsetMu.Lock()
	defer l.offsetMu.Unlock()
	return l.now().Add(l.offset)
}

// Lease is how long a claim or a match lock of this ledger lasts unless
// renewed.
func (l *Ledger) Lease() time.Duration { return l.lease }

// Owner is the replica that owns this ledger's claims.
func (l *Ledger) Owner() string { return l.owner }

// LeaseLeft is how long the claim or match lock stored as value still
// runs, on the server's clock as this replica estimates it; ok is false
// when value is neither (a record of a created customer, say).
func (l *Ledger) LeaseLeft(ctx context.Context, value []byte) (left time.Duration, ok bool) {
	v := string(value)
	rest, isClaim := strings.CutPrefix(v, claimPrefix)
	if !isClaim {
		if rest, ok = strings.CutPrefix(v, lockPrefix); !ok {
			return 0, false
		}
	}
	_, expiry := parseOwnerExpiry(rest)
	return l.leaseLeft(ctx, expiry), true
}

// leaseEnd is the end, on the server's clock, of a lease taken now.
func (l *Ledger) leaseEnd(ctx context.Context) time.Time {
	return l.serverNow(ctx).Add(l.lease)
}

// leaseLeft is how long a lease ending at expiry (a claim's or a match
// lock's, on the server's clock) still runs. No more than a lease: more is
// another replica's estimate's error.
func (l *Ledger) leaseLeft(ctx context.Context, expiry time.Time) time.Duration {
	return min(expiry.Sub(l.serverNow(ctx)), l.lease)
}

// Key turns an item's idempotency key of any text into a valid KV key,
// in scope: "" (the shared scope) or a workflow's name. With the shared scope
// (the default of a workflow no other overlaps) the key does not depend on
// the workflow, so a renamed workflow, or another workflow meeting the same
// event, finds what was created before; with a workflow's scope, each
// workflow of a fan-out creates its own customer.
func Key(scope, key string) string {
	sum := sha256.Sum256([]byte(key))
	hash := hex.EncodeToString(sum[:16])
	if scope != "" {
		return "wf." + scope + "." + hash
	}
	return "item." + hash
}

// Claim is what [Ledger.Claim] found.
type Claim struct {
	CustomerID string        // set when the item was created before
	Sent       string        // with customerID: the hash of the body last sent for it ("" if unknown)
	Stale      bool          // an earlier claim was taken over: its outcome is unknown
	Wait       time.Duration // with ErrClaimed: until the other replica's lease ends
	// bulkJob, with stale: the bulk job the earlier claim sent the item in;
	// its results say what became of it. bulkBatch, with stale: the bulk
	// request the earlier claim was made for, whose job id, once Kustomer
	// returned it, is recorded once for the whole request (batchJob).
	BulkJob   string
	BulkBatch string
	// rev and mark, for a claim this replica holds: the claim's revision and
	// what it names (renew).
	rev  uint64
	mark string
}

const (
	claimPrefix   = "claim "
	createdPrefix = "created "
	// jobMarker names a bulk job in the claims of earlier versions, which
	// wrote it into each item's claim; it is still read (a rolling upgrade
	// meets such claims), and kept by a take-over.
	jobMarker   = " bulk:"
	batchMarker = " batch:"
	// batchKeyPrefix + a bulk request's token is the key of the job id
	// Kustomer gave the request.
	batchKeyPrefix = "bulkbatch."
)

// claimValue is a claim of this replica's from now for a lease, marked
// (jobMarker or batchMarker and its value) or not ("").
func (l *Ledger) claimValue(ctx context.Context, mark string) []byte {
	return fmt.Appendf(nil, "%s%s %d%s", claimPrefix, l.owner, l.leaseEnd(ctx).UnixMilli(), mark)
}

// parseClaim reads "claim <owner> <expiry ms>[ bulk:<job id>| batch:<token>]".
func parseClaim(v string) (owner string, expiry time.Time, job, batch string) {
	rest := strings.TrimPrefix(v, claimPrefix)
	if i := strings.LastIndex(rest, jobMarker); i >= 0 {
		rest, job = rest[:i], rest[i+len(jobMarker):]
	} else if i := strings.LastIndex(rest, batchMarker); i >= 0 {
		rest, batch = rest[:i], rest[i+len(batchMarker):]
	}
	owner, expiry = parseOwnerExpiry(rest)
	return owner, expiry, job, batch
}

// mark is the marker of a claim naming job or, without one, batch.
func mark(job, batch string) string {
	switch {
	case job != "":
		return jobMarker + job
	case batch != "":
		return batchMarker + batch
	}
	return ""
}

func parseOwnerExpiry(rest string) (owner string, expiry time.Time) {
	i := strings.LastIndexByte(rest, ' ')
	if i < 0 {
		return rest, time.Time{}
	}
	ms, err := strconv.ParseInt(rest[i+1:], 10, 64)
	if err != nil {
		return rest[:i], time.Time{}
	}
	return rest[:i], time.UnixMilli(ms)
}

// Claim takes the key for this replica. It returns the recorded customer id
// when the item was created before, ErrClaimed when another replica holds a
// live claim, and otherwise owns the key until record or release. A new
// claim names batch, the token of the bulk request the item is claimed for
// ("" in per-item mode).
func (l *Ledger) Claim(ctx context.Context, key, batch string) (Claim, error) {
	ctx, span := tracing.Start(ctx, "ksync.ledger.claim")
	defer span.End()
	fresh := mark("", batch)
	if rev, err := l.kv.Create(ctx, key, l.claimValue(ctx, fresh)); err == nil {
		return Claim{rev: rev, mark: fresh}, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return Claim{}, fmt.Errorf("ledger: claim: %w", err)
	}
	entry, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between the two calls: a fresh claim, if nobody was faster.
		if rev, err := l.kv.Create(ctx, key, l.claimValue(ctx, fresh)); err == nil {
			return Claim{rev: rev, mark: fresh}, nil
		}
		return Claim{Wait: time.Second}, ErrClaimed
	}
	if err != nil {
		return Claim{}, fmt.Errorf("ledger: read: %w", err)
	}
	v := string(entry.Value())
	if rest, ok := strings.CutPrefix(v, createdPrefix); ok {
		id, sent, _ := strings.Cut(rest, " ")
		return Claim{CustomerID: id, Sent: sent}, nil
	}
	owner, expiry, job, batch := parseClaim(v)
	if left := l.leaseLeft(ctx, expiry); owner != l.owner && left > 0 {
		return Claim{Wait: left}, ErrClaimed
	}
	// Our own earlier claim, or a dead replica's: take it over. Whatever that
	// attempt sent may have been created. The bulk request it was sent in
	// stays named until the item is sent again.
	kept := mark(job, batch)
	rev, err := l.kv.Update(ctx, key, l.claimValue(ctx, kept), entry.Revision())
	if err != nil {
		return Claim{Wait: time.Second}, ErrClaimed
	}
	return Claim{Stale: true, BulkJob: job, BulkBatch: batch, rev: rev, mark: kept}, nil
}

// Renew extends this replica's claim on key (c, from claim) by a lease
// from now. It fails with ErrClaimed when the claim is no longer the one c
// holds: it ran out, and another replica took it over.
func (l *Ledger) Renew(ctx context.Context, key string, c *Claim) error {
	rev, err := l.kv.Update(ctx, key, l.claimValue(ctx, c.mark), c.rev)
	if err != nil {
		return errClaimLost
	}
	c.rev = rev
	return nil
}

// ClaimForBatch renews this replica's claim on key for the bulk request
// batch: an item claimed earlier, about to be sent in that request.
func (l *Ledger) ClaimForBatch(ctx context.Context, key, batch string) error {
	if _, err := l.kv.Put(ctx, key, l.claimValue(ctx, mark("", batch))); err != nil {
		return fmt.Errorf("ledger: claim for bulk request: %w", err)
	}
	return nil
}

// BatchRecord is what the ledger knows of one bulk request (its token):
// written before the request is sent, then with the job id Kustomer
// answered, and again by the replica following the job every third of a
// lease, so a replica taking over one of its items' claims knows whether
// the request was sent, when (on the KV server's clock, which replicas
// share), which job it became, and whether someone still follows it.
type BatchRecord struct {
	Found bool
	Job   string    // "" while the request has no answer (or before versions that wrote one)
	Owner string    // the replica that wrote it last
	Count int       // items in the request; 0 when unknown
	Sent  time.Time // when the request was sent, server clock; zero when unknown
	Beat  time.Time // its last write, server clock
}

// BatchSending records, before bulk request batch of count items is sent,
// that it is about to be, and returns the server's time of that write:
// the request is sent no sooner.
func (l *Ledger) BatchSending(ctx context.Context, batch string, count int) (time.Time, error) {
	if _, err := l.kv.Put(ctx, batchKeyPrefix+batch, fmt.Appendf(nil, "sending %d %s", count, l.owner)); err != nil {
		return time.Time{}, fmt.Errorf("ledger: record bulk request: %w", err)
	}
	e, err := l.kv.Get(ctx, batchKeyPrefix+batch)
	if err != nil {
		return time.Time{}, fmt.Errorf("ledger: read bulk request: %w", err)
	}
	return e.Created(), nil
}

// BatchSent records that the bulk request batch (count items, sent at
// sent) became Kustomer's job id, once for all its items: a replica taking
// over one of their claims after a crash asks that job what became of the
// item instead of sending it again. Written again while the job is
// followed, it tells other replicas someone still does.
func (l *Ledger) BatchSent(ctx context.Context, batch, id string, count int, sent time.Time) error {
	v := fmt.Appendf(nil, "job %s %d %d %s", id, count, sent.UnixMilli(), l.owner)
	if _, err := l.kv.Put(ctx, batchKeyPrefix+batch, v); err != nil {
		return fmt.Errorf("ledger: record bulk job: %w", err)
	}
	return nil
}

// BatchRead reads the record of bulk request batch; found is false when
// there is none: the request was never sent (or, from versions before the
// record was written first, not answered).
func (l *Ledger) BatchRead(ctx context.Context, batch string) (BatchRecord, error) {
	e, err := l.kv.Get(ctx, batchKeyPrefix+batch)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return BatchRecord{}, nil
	case err != nil:
		return BatchRecord{}, fmt.Errorf("ledger: read bulk job: %w", err)
	}
	return batchRecord(e), nil
}

// batchRecord decodes the bulk request record e: "sending <count>
// <owner>" (sent at its write), "job <id> <count> <sent ms> <owner>", or
// an earlier version's job id alone.
func batchRecord(e jetstream.KeyValueEntry) BatchRecord {
	r := BatchRecord{Found: true, Beat: e.Created()}
	v := string(e.Value())
	if rest, ok := strings.CutPrefix(v, "sending "); ok {
		n, owner, _ := strings.Cut(rest, " ")
		r.Count, _ = strconv.Atoi(n)
		r.Owner, r.Sent = owner, r.Beat
		return r
	}
	if rest, ok := strings.CutPrefix(v, "job "); ok {
		f := strings.SplitN(rest, " ", 4)
		if len(f) == 4 {
			r.Job, r.Owner = f[0], f[3]
			r.Count, _ = strconv.Atoi(f[1])
			if ms, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				r.Sent = time.UnixMilli(ms)
			}
			return r
		}
	}
	r.Job = v // an earlier version's record: the job id alone
	return r
}

// BatchJob is the job id recorded for the bulk request batch, or "" when
// none was: the request was not answered, or its answer not recorded.
func (l *Ledger) BatchJob(ctx context.Context, batch string) (string, error) {
	r, err := l.BatchRead(ctx, batch)
	return r.Job, err
}

// NewBatchToken names one bulk request in the claims of its items.
func NewBatchToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Record stores under key the id of the customer created, updated or
// matched for the item, and sent, the hash of the body last sent (bodyHash),
// as "created <id> <hash>".
//
// A customer exists once Kustomer answered, so the write is tried a few
// times over about a second (a JetStream leader change) before record
// gives up; the caller then must not acknowledge the event, so that its
// redelivery finds the customer by look-up.
func (l *Ledger) Record(ctx context.Context, key, customerID, sent string) error {
	ctx, span := tracing.Start(ctx, "ksync.ledger.record")
	defer span.End()
	v := []byte(createdPrefix + customerID + " " + sent)
	wait := recordRetryWait
	for try := 1; ; try++ {
		_, err := l.kv.Put(ctx, key, v)
		if err == nil {
			return nil
		}
		if try == RecordTries {
			return fmt.Errorf("ledger: record: %w", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ledger: record: %w", err)
		}
		wait *= 3
	}
}

// Release gives up a claim after a failure Kustomer answered (the customer
// was certainly not created), so a later attempt can claim it at once.
func (l *Ledger) Release(ctx context.Context, key string) {
	entry, err := l.kv.Get(ctx, key)
	if err != nil {
		return
	}
	if owner, _, _, _ := parseClaim(string(entry.Value())); !strings.HasPrefix(string(entry.Value()), claimPrefix) || owner != l.owner {
		return
	}
	_ = l.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
}
