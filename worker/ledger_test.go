package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestLedgerLetsOneReplicaClaimAnItemAndTakesOverAnExpiredClaim(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, b, now := twoReplicas(t, js, "")
	key := ledgerKey("wf", "lead-1")

	got, err := a.claim(ctx, key, "")
	require.NoError(t, err)
	require.Positive(t, got.rev)
	require.Equal(t, claimResult{rev: got.rev}, got, "a fresh claim")

	got, err = b.claim(ctx, key, "")
	require.True(t, errors.Is(err, errClaimed), "b must not create while a holds the claim")
	// On the server's clock, as each replica estimates it from its own.
	require.InDelta(t, float64(30*time.Second), float64(got.wait), float64(time.Second))

	*now = now.Add(31 * time.Second) // a died mid-request
	got, err = b.claim(ctx, key, "")
	require.NoError(t, err)
	require.True(t, got.stale, "b takes over and knows a's outcome is unknown")

	require.NoError(t, b.record(ctx, key, "cust-1", "3f2a"))
	got, err = a.claim(ctx, key, "")
	require.NoError(t, err)
	require.Equal(t, "cust-1", got.customerID)
	require.Equal(t, "3f2a", got.sent, "the ledger knows what was last sent")
}

func TestLedgerReleaseFreesTheClaimForTheNextAttempt(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, err := openLedger(ctx, js, LedgerConfig{}, "replica-a", time.Now)
	require.NoError(t, err)
	b, err := openLedger(ctx, js, LedgerConfig{}, "replica-b", time.Now)
	require.NoError(t, err)
	key := ledgerKey("wf", "lead-2")

	_, err = a.claim(ctx, key, "")
	require.NoError(t, err)
	b.release(ctx, key) // not b's claim: nothing happens
	_, err = b.claim(ctx, key, "")
	require.ErrorIs(t, err, errClaimed)

	a.release(ctx, key)
	got, err := b.claim(ctx, key, "")
	require.NoError(t, err)
	require.False(t, got.stale, "a released claim was answered: no unknown outcome")
}

func TestASecondAttemptOfAProcessOnAnItemWaitsForTheFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l ledger
		ctx := context.Background()
		require.NoError(t, l.hold(ctx, "item.a"))
		require.NoError(t, l.hold(ctx, "item.b"), "other items are not held up")

		second := make(chan error, 1)
		go func() { second <- l.hold(ctx, "item.a") }()
		synctest.Wait() // the second attempt has gone as far as it can
		select {
		case err := <-second:
			t.Fatalf("the second attempt went ahead while the first held the item (err %v)", err)
		default:
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, l.hold(cancelled, "item.a"), context.Canceled, "a waiting attempt ends with its context")

		l.unhold("item.a")
		require.NoError(t, <-second, "the second attempt goes on once the first let go")
		l.unhold("item.a")
		l.unhold("item.b")
	})
}

func TestABulkRequestsJobIsRecordedOnceAndFoundThroughAnyOfItsItemsClaims(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, b, now := twoReplicas(t, js, "")
	keys := []string{ledgerKey("", "lead-1"), ledgerKey("", "lead-2"), ledgerKey("", "lead-3")}

	token := newBatchToken()
	for _, k := range keys[:2] {
		_, err := a.claim(ctx, k, token)
		require.NoError(t, err)
	}
	_, err := a.claim(ctx, keys[2], newBatchToken()) // claimed for a request never answered
	require.NoError(t, err)
	job, err := a.batchJob(ctx, token)
	require.NoError(t, err)
	require.Empty(t, job, "no job before Kustomer answered")
	require.NoError(t, a.batchSent(ctx, token, "69f0c0ffee"))

	*now = now.Add(31 * time.Second) // a died while following the job
	for _, k := range keys[:2] {
		got, err := b.claim(ctx, k, newBatchToken())
		require.NoError(t, err)
		require.True(t, got.stale)
		require.Equal(t, token, got.bulkBatch, "the claim names a's request")
		job, err := b.batchJob(ctx, got.bulkBatch)
		require.NoError(t, err)
		require.Equal(t, "69f0c0ffee", job, "one record of the job serves every item of the request")
	}
	got, err := b.claim(ctx, keys[2], "")
	require.NoError(t, err)
	job, err = b.batchJob(ctx, got.bulkBatch)
	require.NoError(t, err)
	require.Empty(t, job, "a request without a job: its items are looked up before they are sent again")

	// b takes the claims over for its own request; after b's crash the
	// next replica finds b's request, not a's.
	tokenB := newBatchToken()
	require.NoError(t, b.claimForBatch(ctx, keys[0], tokenB))
	*now = now.Add(31 * time.Second)
	got, err = a.claim(ctx, keys[0], "")
	require.NoError(t, err)
	require.Equal(t, tokenB, got.bulkBatch)
}

// twoReplicas opens the ledger in bucket ("" for the default) as replicas a
// and b, with a 30 s lease, on a clock the test moves through *now.
func twoReplicas(t *testing.T, js jetstream.JetStream, bucket string) (a, b *ledger, now *time.Time) {
	t.Helper()
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return at }
	var err error
	a, err = openLedger(context.Background(), js, LedgerConfig{Bucket: bucket, Lease: 30 * time.Second}, "replica-a", clock)
	require.NoError(t, err)
	b, err = openLedger(context.Background(), js, LedgerConfig{Bucket: bucket, Lease: 30 * time.Second}, "replica-b", clock)
	require.NoError(t, err)
	return a, b, &at
}

// A claim an earlier version wrote, naming its bulk job itself, still
// leads a replica that takes it over to that job (a rolling upgrade).
func TestAClaimNamingItsBulkJobTheOldWayIsStillFollowed(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, b, now := twoReplicas(t, js, "")
	key := ledgerKey("", "lead-9")
	_, err := a.kv.Put(ctx, key, fmt.Appendf(nil, "claim replica-a %d bulk:69f0c0ffee", a.leaseEnd(ctx).UnixMilli()))
	require.NoError(t, err)
	*now = now.Add(31 * time.Second)
	got, err := b.claim(ctx, key, newBatchToken())
	require.NoError(t, err)
	require.True(t, got.stale)
	require.Equal(t, "69f0c0ffee", got.bulkJob)
	require.Empty(t, got.bulkBatch)
}

// kvRecordsFail is a ledger bucket whose first records of a created
// customer fail, as during a JetStream leader change that outlasts record's
// tries.
type kvRecordsFail struct {
	jetstream.KeyValue
	failures atomic.Int32
}

func (k *kvRecordsFail) Put(ctx context.Context, key string, v []byte) (uint64, error) {
	if strings.HasPrefix(string(v), createdPrefix) && k.failures.Add(-1) >= 0 {
		return 0, errors.New("nats: no responders available for request")
	}
	return k.KeyValue.Put(ctx, key, v)
}

// A customer created but not recorded in the ledger is not acknowledged:
// the event comes back, the customer is found by its externalId and
// recorded, and the lead exists once.
func TestACustomerTheLedgerCannotRecordLeavesTheEventUnacknowledgedUntilItIs(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: leadConfig()})
	kv := &kvRecordsFail{KeyValue: h.worker.ledger.kv}
	kv.failures.Store(recordTries) // every try of the first record
	h.worker.ledger.kv = kv
	seq := h.publish("leads.web", "unrecorded-1", `{"id":"ur-1","name":"Ann"}`)
	rec := h.waitRun(seq)
	require.Equal(t, RunSucceeded, rec.Status)
	require.Equal(t, outcome.AlreadyCreated, rec.Items[0].Outcome, "the redelivery found it")
	require.Equal(t, fmt.Sprintf("%s-%d-2-default", StreamDefault, seq), rec.ID, "the run of the second delivery: the first was not acknowledged")
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ur-1"])
	got, err := kv.KeyValue.Get(context.Background(), ledgerKey("", "ur-1"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(got.Value()), createdPrefix), "recorded at last: %s", got.Value())
}

// The same in bulk mode: the job created the customer, the ledger could
// not record it, and the event waits for its redelivery, which reads the
// job again.
func TestABulkCustomerTheLedgerCannotRecordLeavesTheEventUnacknowledgedUntilItIs(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: bulkLoopConfig, sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond}})
	kv := &kvRecordsFail{KeyValue: h.worker.ledger.kv}
	kv.failures.Store(recordTries)
	h.worker.ledger.kv = kv
	seq := h.publish("leads.web", "unrecorded-2", leadsEvent("a"))
	rec := h.waitRun(seq)
	require.Equal(t, RunSucceeded, rec.Status)
	require.Equal(t, fmt.Sprintf("%s-%d-2-bulk", StreamDefault, seq), rec.ID, "the run of the second delivery")
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ext-a"])
	require.Equal(t, 1, h.sb.Sandbox.Stats().BulkJobs, "the redelivery read the job its claim names")
}

// A claim renewed while its attempt waits for the budget outlives its
// first lease; one that ran out and was taken over cannot be renewed.
func TestLedgerRenewsALiveClaimAndNotOneTakenOver(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, b, now := twoReplicas(t, js, "")
	key := ledgerKey("", "lead-renew")

	held, err := a.claim(ctx, key, "")
	require.NoError(t, err)
	*now = now.Add(20 * time.Second)
	require.NoError(t, a.renew(ctx, key, &held))
	*now = now.Add(20 * time.Second) // 40 s after the claim, 20 s after the renewal
	_, err = b.claim(ctx, key, "")
	require.ErrorIs(t, err, errClaimed, "renewed: still a's")

	*now = now.Add(31 * time.Second) // a stalled past its renewed lease
	_, err = b.claim(ctx, key, "")
	require.NoError(t, err, "b takes the expired claim over")
	require.ErrorIs(t, a.renew(ctx, key, &held), errClaimed, "a must not send: the item is b's now")
}

// Replicas whose clocks disagree by a minute agree on a claim's lease and
// on a match lock's: a lease is measured on the NATS server's clock, from
// the claim's last write. Before, a claim held the claimer's own expiry:
// a replica a minute ahead took a live claim over as expired, and one a
// minute behind wrote claims the others took over at once.
func TestClaimsAndMatchLocksHoldAcrossReplicasWhoseClocksDisagreeByAMinute(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	at := time.Now()
	open := func(owner string, skew time.Duration) (*ledger, *time.Time) {
		now := at.Add(skew)
		l, err := openLedger(ctx, js, LedgerConfig{Lease: 30 * time.Second}, owner, func() time.Time { return now })
		require.NoError(t, err)
		return l, &now
	}
	behind, _ := open("replica-behind", -time.Minute)
	onTime, onTimeNow := open("replica-on-time", 0)
	ahead, _ := open("replica-ahead", time.Minute)

	// A claim of the replica behind is live for the others.
	key := ledgerKey("", "lead-skew-1")
	_, err := behind.claim(ctx, key, "")
	require.NoError(t, err)
	for _, l := range []*ledger{onTime, ahead} {
		got, err := l.claim(ctx, key, "")
		require.ErrorIs(t, err, errClaimed, "%s took a live claim over", l.owner)
		require.InDelta(t, float64(30*time.Second), float64(got.wait), float64(5*time.Second))
	}
	// A claim of the replica on time is live for the replica ahead.
	key2 := ledgerKey("", "lead-skew-2")
	_, err = onTime.claim(ctx, key2, "")
	require.NoError(t, err)
	_, err = ahead.claim(ctx, key2, "")
	require.ErrorIs(t, err, errClaimed, "the replica a minute ahead took a live claim over")
	// Match locks likewise.
	unlock, _, err := behind.lockMatches(ctx, []string{"email:skew@example.com"})
	require.NoError(t, err)
	defer unlock()
	_, _, err = ahead.lockMatches(ctx, []string{"email:skew@example.com"})
	require.ErrorIs(t, err, errClaimed, "the replica a minute ahead took a live match lock over")

	// A lease still ends: 31 s later on the clock of the replica on time,
	// the claim and the lock of the replica behind are taken over.
	*onTimeNow = onTimeNow.Add(31 * time.Second)
	got, err := onTime.claim(ctx, key, "")
	require.NoError(t, err)
	require.True(t, got.stale, "a claim one lease old is taken over")
	unlock2, _, err := onTime.lockMatches(ctx, []string{"email:skew@example.com"})
	require.NoError(t, err, "a lock one lease old is taken over")
	unlock2()
}
