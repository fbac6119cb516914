package worker

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

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/tracing"
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

// offsetRefresh is how often, on its own clock, a replica measures again
// how far its clock is from the NATS server's (see ledger.serverNow).
const offsetRefresh = 10 * time.Minute

// recordTries and recordRetryWait bound record's attempts: 0.1 s, 0.3 s
// and 0.9 s apart.
const (
	recordTries     = 4
	recordRetryWait = 100 * time.Millisecond
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
type ledger struct {
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

// hold reserves key for one attempt of this process, waiting while another
// attempt of this process holds it (one Kustomer request at most), so the
// second attempt then finds what the first recorded. unhold gives it back.
func (l *ledger) hold(ctx context.Context, key string) error {
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

// tryHold is hold without the wait: it reports false when another attempt
// of this process holds key.
func (l *ledger) tryHold(key string) bool { return l.acquire(key) == nil }

// acquire reserves key for the caller and returns nil, or, when another
// attempt of this process holds it, a channel closed when that one lets go.
func (l *ledger) acquire(key string) (busy <-chan struct{}) {
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

func (l *ledger) unhold(key string) {
	l.heldMu.Lock()
	defer l.heldMu.Unlock()
	if done, ok := l.held[key]; ok {
		close(done)
		delete(l.held, key)
	}
}

func openLedger(ctx context.Context, js jetstream.JetStream, cfg LedgerConfig, owner string, now func() time.Time) (*ledger, error) {
	cfg.Bucket = cmp.Or(cfg.Bucket, LedgerBucketDefault)
	if cfg.TTL == 0 {
		cfg.TTL = LedgerTTLDefault
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
		return nil, fmt.Errorf("worker: ledger bucket %s: %w", cfg.Bucket, err)
	}
	l := &ledger{kv: kv, lease: cfg.Lease, owner: owner, now: now}
	if err := l.measureOffset(ctx); err != nil {
		return nil, fmt.Errorf("worker: ledger bucket %s: %w", cfg.Bucket, err)
	}
	return l, nil
}

// measureOffset measures how far this replica's clock is from the NATS
// server's: the server's time in the bucket's stream info, against the
// middle of the request on this replica's clock.
func (l *ledger) measureOffset(ctx context.Context) error {
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
func (l *ledger) serverNow(ctx context.Context) time.Time {
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

// leaseEnd is the end, on the server's clock, of a lease taken now.
func (l *ledger) leaseEnd(ctx context.Context) time.Time {
	return l.serverNow(ctx).Add(l.lease)
}

// leaseLeft is how long a lease ending at expiry (a claim's or a match
// lock's, on the server's clock) still runs. No more than a lease: more is
// another replica's estimate's error.
func (l *ledger) leaseLeft(ctx context.Context, expiry time.Time) time.Duration {
	return min(expiry.Sub(l.serverNow(ctx)), l.lease)
}

// ledgerKey turns an item's idempotency key of any text into a valid KV key,
// in scope: "" (the shared scope) or a workflow's name. With the shared scope
// (the default of a workflow no other overlaps) the key does not depend on
// the workflow, so a renamed workflow, or another workflow meeting the same
// event, finds what was created before; with a workflow's scope, each
// workflow of a fan-out creates its own customer.
func ledgerKey(scope, key string) string {
	sum := sha256.Sum256([]byte(key))
	hash := hex.EncodeToString(sum[:16])
	if scope != "" {
		return "wf." + scope + "." + hash
	}
	return "item." + hash
}

// ledgerScope is the scope of wf's keys for ledgerKey.
func ledgerScope(wf *mapping.Workflow) string {
	if wf.LedgerScope == mapping.LedgerScopeWorkflow {
		return wf.Name
	}
	return ""
}

// claimResult is what claim found.
type claimResult struct {
	customerID string        // set when the item was created before
	sent       string        // with customerID: the hash of the body last sent for it ("" if unknown)
	stale      bool          // an earlier claim was taken over: its outcome is unknown
	wait       time.Duration // with errClaimed: until the other replica's lease ends
	// bulkJob, with stale: the bulk job the earlier claim sent the item in;
	// its results say what became of it. bulkBatch, with stale: the bulk
	// request the earlier claim was made for, whose job id, once Kustomer
	// returned it, is recorded once for the whole request (batchJob).
	bulkJob   string
	bulkBatch string
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
func (l *ledger) claimValue(ctx context.Context, mark string) []byte {
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

// claim takes the key for this replica. It returns the recorded customer id
// when the item was created before, errClaimed when another replica holds a
// live claim, and otherwise owns the key until record or release. A new
// claim names batch, the token of the bulk request the item is claimed for
// ("" in per-item mode).
func (l *ledger) claim(ctx context.Context, key, batch string) (claimResult, error) {
	ctx, span := tracing.Start(ctx, "ksync.ledger.claim")
	defer span.End()
	fresh := mark("", batch)
	if rev, err := l.kv.Create(ctx, key, l.claimValue(ctx, fresh)); err == nil {
		return claimResult{rev: rev, mark: fresh}, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return claimResult{}, fmt.Errorf("worker: ledger claim: %w", err)
	}
	entry, err := l.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between the two calls: a fresh claim, if nobody was faster.
		if rev, err := l.kv.Create(ctx, key, l.claimValue(ctx, fresh)); err == nil {
			return claimResult{rev: rev, mark: fresh}, nil
		}
		return claimResult{wait: time.Second}, errClaimed
	}
	if err != nil {
		return claimResult{}, fmt.Errorf("worker: ledger read: %w", err)
	}
	v := string(entry.Value())
	if rest, ok := strings.CutPrefix(v, createdPrefix); ok {
		id, sent, _ := strings.Cut(rest, " ")
		return claimResult{customerID: id, sent: sent}, nil
	}
	owner, expiry, job, batch := parseClaim(v)
	if left := l.leaseLeft(ctx, expiry); owner != l.owner && left > 0 {
		return claimResult{wait: left}, errClaimed
	}
	// Our own earlier claim, or a dead replica's: take it over. Whatever that
	// attempt sent may have been created. The bulk request it was sent in
	// stays named until the item is sent again.
	kept := mark(job, batch)
	rev, err := l.kv.Update(ctx, key, l.claimValue(ctx, kept), entry.Revision())
	if err != nil {
		return claimResult{wait: time.Second}, errClaimed
	}
	return claimResult{stale: true, bulkJob: job, bulkBatch: batch, rev: rev, mark: kept}, nil
}

// renew extends this replica's claim on key (c, from claim) by a lease
// from now. It fails with errClaimed when the claim is no longer the one c
// holds: it ran out, and another replica took it over.
func (l *ledger) renew(ctx context.Context, key string, c *claimResult) error {
	rev, err := l.kv.Update(ctx, key, l.claimValue(ctx, c.mark), c.rev)
	if err != nil {
		return fmt.Errorf("worker: claim on the item lost while waiting for the budget: %w", errClaimed)
	}
	c.rev = rev
	return nil
}

// claimForBatch renews this replica's claim on key for the bulk request
// batch: an item claimed earlier, about to be sent in that request.
func (l *ledger) claimForBatch(ctx context.Context, key, batch string) error {
	if _, err := l.kv.Put(ctx, key, l.claimValue(ctx, mark("", batch))); err != nil {
		return fmt.Errorf("worker: ledger claim for bulk request: %w", err)
	}
	return nil
}

// batchRecord is what the ledger knows of one bulk request (its token):
// written before the request is sent, then with the job id Kustomer
// answered, and again by the replica following the job every third of a
// lease, so a replica taking over one of its items' claims knows whether
// the request was sent, when (on the KV server's clock, which replicas
// share), which job it became, and whether someone still follows it.
type batchRecord struct {
	found bool
	job   string    // "" while the request has no answer (or before versions that wrote one)
	owner string    // the replica that wrote it last
	count int       // items in the request; 0 when unknown
	sent  time.Time // when the request was sent, server clock; zero when unknown
	beat  time.Time // its last write, server clock
}

// batchSending records, before bulk request batch of count items is sent,
// that it is about to be, and returns the server's time of that write:
// the request is sent no sooner.
func (l *ledger) batchSending(ctx context.Context, batch string, count int) (time.Time, error) {
	if _, err := l.kv.Put(ctx, batchKeyPrefix+batch, fmt.Appendf(nil, "sending %d %s", count, l.owner)); err != nil {
		return time.Time{}, fmt.Errorf("worker: ledger record bulk request: %w", err)
	}
	e, err := l.kv.Get(ctx, batchKeyPrefix+batch)
	if err != nil {
		return time.Time{}, fmt.Errorf("worker: ledger read bulk request: %w", err)
	}
	return e.Created(), nil
}

// batchSent records that the bulk request batch (count items, sent at
// sent) became Kustomer's job id, once for all its items: a replica taking
// over one of their claims after a crash asks that job what became of the
// item instead of sending it again. Written again while the job is
// followed, it tells other replicas someone still does.
func (l *ledger) batchSent(ctx context.Context, batch, id string, count int, sent time.Time) error {
	v := fmt.Appendf(nil, "job %s %d %d %s", id, count, sent.UnixMilli(), l.owner)
	if _, err := l.kv.Put(ctx, batchKeyPrefix+batch, v); err != nil {
		return fmt.Errorf("worker: ledger record bulk job: %w", err)
	}
	return nil
}

// batchRead reads the record of bulk request batch; found is false when
// there is none: the request was never sent (or, from versions before the
// record was written first, not answered).
func (l *ledger) batchRead(ctx context.Context, batch string) (batchRecord, error) {
	e, err := l.kv.Get(ctx, batchKeyPrefix+batch)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return batchRecord{}, nil
	case err != nil:
		return batchRecord{}, fmt.Errorf("worker: ledger read bulk job: %w", err)
	}
	r := batchRecord{found: true, beat: e.Created()}
	v := string(e.Value())
	if rest, ok := strings.CutPrefix(v, "sending "); ok {
		n, owner, _ := strings.Cut(rest, " ")
		r.count, _ = strconv.Atoi(n)
		r.owner, r.sent = owner, r.beat
		return r, nil
	}
	if rest, ok := strings.CutPrefix(v, "job "); ok {
		f := strings.SplitN(rest, " ", 4)
		if len(f) == 4 {
			r.job, r.owner = f[0], f[3]
			r.count, _ = strconv.Atoi(f[1])
			if ms, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				r.sent = time.UnixMilli(ms)
			}
			return r, nil
		}
	}
	r.job = v // an earlier version's record: the job id alone
	return r, nil
}

// batchJob is the job id recorded for the bulk request batch, or "" when
// none was: the request was not answered, or its answer not recorded.
func (l *ledger) batchJob(ctx context.Context, batch string) (string, error) {
	r, err := l.batchRead(ctx, batch)
	return r.job, err
}

// newBatchToken names one bulk request in the claims of its items.
func newBatchToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// record stores under key the id of the customer created, updated or
// matched for the item, and sent, the hash of the body last sent (bodyHash),
// as "created <id> <hash>".
//
// A customer exists once Kustomer answered, so the write is tried a few
// times over about a second (a JetStream leader change) before record
// gives up; the caller then must not acknowledge the event (itemNote's
// unrecorded), so that its redelivery finds the customer by look-up.
func (l *ledger) record(ctx context.Context, key, customerID, sent string) error {
	ctx, span := tracing.Start(ctx, "ksync.ledger.record")
	defer span.End()
	v := []byte(createdPrefix + customerID + " " + sent)
	wait := recordRetryWait
	for try := 1; ; try++ {
		_, err := l.kv.Put(ctx, key, v)
		if err == nil {
			return nil
		}
		if try == recordTries {
			return fmt.Errorf("worker: ledger record: %w", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("worker: ledger record: %w", err)
		}
		wait *= 3
	}
}

// release gives up a claim after a failure Kustomer answered (the customer
// was certainly not created), so a later attempt can claim it at once.
func (l *ledger) release(ctx context.Context, key string) {
	entry, err := l.kv.Get(ctx, key)
	if err != nil {
		return
	}
	if owner, _, _, _ := parseClaim(string(entry.Value())); !strings.HasPrefix(string(entry.Value()), claimPrefix) || owner != l.owner {
		return
	}
	_ = l.kv.Delete(ctx, key, jetstream.LastRevision(entry.Revision()))
}
