package ledger

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestLedgerLetsOneReplicaClaimAnItemAndTakesOverAnExpiredClaim(t *testing.T) {
	t.Parallel()
	a, b, now := twoReplicas(t)
	ctx := context.Background()
	key, got := claim(t, a, "wf", "lead-1")
	require.Positive(t, got.rev)
	require.Equal(t, Claim{rev: got.rev}, got, "a fresh claim")

	got, err := b.Claim(ctx, key, "")
	require.True(t, errors.Is(err, ErrClaimed), "b must not create while a holds the claim")
	// On the server's clock, as each replica estimates it from its own.
	require.InDelta(t, float64(30*time.Second), float64(got.Wait), float64(time.Second))

	*now = now.Add(31 * time.Second) // a died mid-request
	got, err = b.Claim(ctx, key, "")
	require.NoError(t, err)
	require.True(t, got.Stale, "b takes over and knows a's outcome is unknown")

	require.NoError(t, b.Record(ctx, key, "cust-1", "3f2a"))
	got, err = a.Claim(ctx, key, "")
	require.NoError(t, err)
	require.Equal(t, "cust-1", got.CustomerID)
	require.Equal(t, "3f2a", got.Sent, "the ledger knows what was last sent")
}

func TestLedgerReleaseFreesTheClaimForTheNextAttempt(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	a, err := Open(ctx, js, Config{}, "replica-a", time.Now)
	require.NoError(t, err)
	b, err := Open(ctx, js, Config{}, "replica-b", time.Now)
	require.NoError(t, err)
	key := Key("wf", "lead-2")

	_, err = a.Claim(ctx, key, "")
	require.NoError(t, err)
	b.Release(ctx, key) // not b's claim: nothing happens
	_, err = b.Claim(ctx, key, "")
	require.ErrorIs(t, err, ErrClaimed)

	a.Release(ctx, key)
	got, err := b.Claim(ctx, key, "")
	require.NoError(t, err)
	require.False(t, got.Stale, "a released claim was answered: no unknown outcome")
}

func TestASecondAttemptOfAProcessOnAnItemWaitsForTheFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Ledger
		ctx := context.Background()
		require.NoError(t, l.Hold(ctx, "item.a"))
		require.NoError(t, l.Hold(ctx, "item.b"), "other items are not held up")

		second := make(chan error, 1)
		go func() { second <- l.Hold(ctx, "item.a") }()
		synctest.Wait() // the second attempt has gone as far as it can
		select {
		case err := <-second:
			t.Fatalf("the second attempt went ahead while the first held the item (err %v)", err)
		default:
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, l.Hold(cancelled, "item.a"), context.Canceled, "a waiting attempt ends with its context")

		l.Unhold("item.a")
		require.NoError(t, <-second, "the second attempt goes on once the first let go")
		l.Unhold("item.a")
		l.Unhold("item.b")
	})
}

func TestABulkRequestsJobIsRecordedOnceAndFoundThroughAnyOfItsItemsClaims(t *testing.T) {
	t.Parallel()
	a, b, now := twoReplicas(t)
	ctx := context.Background()
	keys := []string{Key("", "lead-1"), Key("", "lead-2"), Key("", "lead-3")}

	token := NewBatchToken()
	for _, k := range keys[:2] {
		_, err := a.Claim(ctx, k, token)
		require.NoError(t, err)
	}
	_, err := a.Claim(ctx, keys[2], NewBatchToken()) // claimed for a request never answered
	require.NoError(t, err)
	job, err := a.BatchJob(ctx, token)
	require.NoError(t, err)
	require.Empty(t, job, "no job before Kustomer answered")
	require.NoError(t, a.BatchSent(ctx, token, "69f0c0ffee", 2, *now))

	*now = now.Add(31 * time.Second) // a died while following the job
	for _, k := range keys[:2] {
		got, err := b.Claim(ctx, k, NewBatchToken())
		require.NoError(t, err)
		require.True(t, got.Stale)
		require.Equal(t, token, got.BulkBatch, "the claim names a's request")
		job, err := b.BatchJob(ctx, got.BulkBatch)
		require.NoError(t, err)
		require.Equal(t, "69f0c0ffee", job, "one record of the job serves every item of the request")
	}
	got, err := b.Claim(ctx, keys[2], "")
	require.NoError(t, err)
	job, err = b.BatchJob(ctx, got.BulkBatch)
	require.NoError(t, err)
	require.Empty(t, job, "a request without a job: its items are looked up before they are sent again")

	// b takes the claims over for its own request; after b's crash the
	// next replica finds b's request, not a's.
	tokenB := NewBatchToken()
	require.NoError(t, b.ClaimForBatch(ctx, keys[0], tokenB))
	*now = now.Add(31 * time.Second)
	got, err = a.Claim(ctx, keys[0], "")
	require.NoError(t, err)
	require.Equal(t, tokenB, got.BulkBatch)
}

// claim claims the key of workflow's lead for l, outside any bulk request,
// wanting it granted; it answers the key and the claim.
func claim(t *testing.T, l *Ledger, workflow, lead string) (string, Claim) {
	t.Helper()
	key := Key(workflow, lead)
	c, err := l.Claim(context.Background(), key, "")
	require.NoError(t, err)
	return key, c
}

// twoReplicas opens the ledger on a new NATS server as replicas a and b,
// with a 30 s lease, on a clock the test moves through *now.
func twoReplicas(t *testing.T) (a, b *Ledger, now *time.Time) {
	t.Helper()
	_, js := natstest.Start(t).Connect(t)
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return at }
	var err error
	a, err = Open(context.Background(), js, Config{Lease: 30 * time.Second}, "replica-a", clock)
	require.NoError(t, err)
	b, err = Open(context.Background(), js, Config{Lease: 30 * time.Second}, "replica-b", clock)
	require.NoError(t, err)
	return a, b, &at
}

// A claim an earlier version wrote, naming its bulk job itself, still
// leads a replica that takes it over to that job (a rolling upgrade).
func TestAClaimNamingItsBulkJobTheOldWayIsStillFollowed(t *testing.T) {
	t.Parallel()
	a, b, now := twoReplicas(t)
	ctx := context.Background()
	key := Key("", "lead-9")
	_, err := a.kv.Put(ctx, key, fmt.Appendf(nil, "claim replica-a %d bulk:69f0c0ffee", a.leaseEnd(ctx).UnixMilli()))
	require.NoError(t, err)
	*now = now.Add(31 * time.Second)
	got, err := b.Claim(ctx, key, NewBatchToken())
	require.NoError(t, err)
	require.True(t, got.Stale)
	require.Equal(t, "69f0c0ffee", got.BulkJob)
	require.Empty(t, got.BulkBatch)
}

// A claim renewed while its attempt waits for the budget outlives its
// first lease; one that ran out and was taken over cannot be renewed.
func TestLedgerRenewsALiveClaimAndNotOneTakenOver(t *testing.T) {
	t.Parallel()
	a, b, now := twoReplicas(t)
	ctx := context.Background()
	key, held := claim(t, a, "", "lead-renew")
	*now = now.Add(20 * time.Second)
	require.NoError(t, a.Renew(ctx, key, &held))
	*now = now.Add(20 * time.Second) // 40 s after the claim, 20 s after the renewal
	_, err := b.Claim(ctx, key, "")
	require.ErrorIs(t, err, ErrClaimed, "renewed: still a's")

	*now = now.Add(31 * time.Second) // a stalled past its renewed lease
	_, err = b.Claim(ctx, key, "")
	require.NoError(t, err, "b takes the expired claim over")
	require.ErrorIs(t, a.Renew(ctx, key, &held), ErrClaimed, "a must not send: the item is b's now")
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
	open := func(owner string, skew time.Duration) (*Ledger, *time.Time) {
		now := at.Add(skew)
		l, err := Open(ctx, js, Config{Lease: 30 * time.Second}, owner, func() time.Time { return now })
		require.NoError(t, err)
		return l, &now
	}
	behind, _ := open("replica-behind", -time.Minute)
	onTime, onTimeNow := open("replica-on-time", 0)
	ahead, _ := open("replica-ahead", time.Minute)

	// A claim of the replica behind is live for the others.
	key := Key("", "lead-skew-1")
	_, err := behind.Claim(ctx, key, "")
	require.NoError(t, err)
	for _, l := range []*Ledger{onTime, ahead} {
		got, err := l.Claim(ctx, key, "")
		require.ErrorIs(t, err, ErrClaimed, "%s took a live claim over", l.Owner())
		require.InDelta(t, float64(30*time.Second), float64(got.Wait), float64(5*time.Second))
	}
	// A claim of the replica on time is live for the replica ahead.
	key2 := Key("", "lead-skew-2")
	_, err = onTime.Claim(ctx, key2, "")
	require.NoError(t, err)
	_, err = ahead.Claim(ctx, key2, "")
	require.ErrorIs(t, err, ErrClaimed, "the replica a minute ahead took a live claim over")
	// Match locks likewise.
	unlock, _, err := behind.LockMatches(ctx, []string{"email:skew@example.com"})
	require.NoError(t, err)
	defer unlock()
	_, _, err = ahead.LockMatches(ctx, []string{"email:skew@example.com"})
	require.ErrorIs(t, err, ErrClaimed, "the replica a minute ahead took a live match lock over")

	// A lease still ends: 31 s later on the clock of the replica on time,
	// the claim and the lock of the replica behind are taken over.
	*onTimeNow = onTimeNow.Add(31 * time.Second)
	got, err := onTime.Claim(ctx, key, "")
	require.NoError(t, err)
	require.True(t, got.Stale, "a claim one lease old is taken over")
	unlock2, _, err := onTime.LockMatches(ctx, []string{"email:skew@example.com"})
	require.NoError(t, err, "a lock one lease old is taken over")
	unlock2()
}

// A Keeper renews an attempt's claim once a third of a lease has passed,
// not before, and fails once another replica took the claim over.
func TestAKeeperRenewsAClaimAThirdOfALeaseOnAndFailsOnceItIsTakenOver(t *testing.T) {
	t.Parallel()
	a, b, now := twoReplicas(t)
	ctx := context.Background()
	key, held := claim(t, a, "", "lead-keep")
	k := a.Keeper()
	k.KeepClaim(key, &held)
	rev := held.rev

	*now = now.Add(5 * time.Second)
	require.NoError(t, k.Renew(ctx))
	require.Equal(t, rev, held.rev, "not renewed before a third of the lease")
	*now = now.Add(6 * time.Second)
	require.NoError(t, k.Renew(ctx))
	require.Greater(t, held.rev, rev, "renewed a third of a lease on")

	*now = now.Add(31 * time.Second) // a stalled past its lease: b takes over
	_, err := b.Claim(ctx, key, "")
	require.NoError(t, err)
	require.ErrorIs(t, k.Renew(ctx), ErrClaimed)
	require.NoError(t, (*Keeper)(nil).Renew(ctx), "a nil Keeper holds nothing")
}

func TestLeaseLeftReadsClaimsAndLocksOnly(t *testing.T) {
	t.Parallel()
	a, _, _ := twoReplicas(t)
	ctx := context.Background()
	left, ok := a.LeaseLeft(ctx, a.claimValue(ctx, ""))
	require.True(t, ok)
	require.InDelta(t, float64(30*time.Second), float64(left), float64(time.Second))
	_, ok = a.LeaseLeft(ctx, a.lockValue(ctx, "n"))
	require.True(t, ok)
	_, ok = a.LeaseLeft(ctx, []byte(createdPrefix+"cust-1 3f2a"))
	require.False(t, ok)
}
