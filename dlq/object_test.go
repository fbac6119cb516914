package dlq_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// setupLimit is setup on a server whose max_payload is limit bytes (0: the
// server's default).
func setupLimit(t *testing.T, limit int32) bundle {
	t.Helper()
	return setupOn(t, natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) { o.MaxPayload = limit }))
}

// requirePurged purges the entries f selects, wants n of them gone and no
// object left in the payloads bucket.
func (b bundle) requirePurged(t *testing.T, f dlq.Filter, n int) {
	t.Helper()
	purged, err := b.store.Purge(context.Background(), f)
	require.NoError(t, err)
	require.Equal(t, n, purged)
	require.Empty(t, b.objects(t))
}

// objects lists the names in the payloads bucket.
func (b bundle) objects(t *testing.T) []string {
	t.Helper()
	obs, err := b.js.ObjectStore(context.Background(), dlq.PayloadsBucket)
	require.NoError(t, err)
	infos, err := obs.List(context.Background())
	if err != nil {
		require.ErrorIs(t, err, jetstream.ErrNoObjectsFound)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

// nearLimit is a JSON payload a little under the connection's max_payload.
func nearLimit(b bundle) []byte {
	n := int(b.nc.MaxPayload()) - 100
	return []byte(`{"name":"` + strings.Repeat("x", n-len(`{"name":""}`)) + `"}`)
}

func TestADeadLetterOfAnEventNearMaxPayloadIsStoredAndReadBackByteForByte(t *testing.T) {
	t.Parallel()
	for _, limit := range []int32{64 << 10, 0} {
		b := setupLimit(t, limit)
		payload := nearLimit(b)
		r := rec("signup", outcome.Validation, 9, string(payload))
		r.Items = []int{0}
		got := b.publish(t, r)
		require.True(t, bytes.Equal(payload, got.Payload), "payload byte for byte (limit %d)", b.nc.MaxPayload())
		require.Equal(t, []int{0}, got.Items)
		require.NotEmpty(t, got.Object)

		raw, err := b.dlq.GetMsg(context.Background(), got.ID)
		require.NoError(t, err)
		require.Empty(t, raw.Data, "the payload is in the object, not the entry")
		require.Equal(t, got.Object, raw.Header.Get(dlq.HeaderObject))

		listed, err := b.store.List(context.Background(), dlq.Filter{Grep: "xxxx"})
		require.NoError(t, err)
		require.Len(t, listed, 1, "grep searches the payload in the object")

		// The replay cannot carry the payload with its headers: it names a
		// replay object the worker reads; the entry's own object goes.
		res, err := b.store.Replay(context.Background(), dlq.Filter{IDs: []uint64{got.ID}}, dlq.ReplayOptions{})
		require.NoError(t, err)
		require.Equal(t, 1, res.Replayed)
		m, err := b.leads.GetLastMsgForSubject(context.Background(), "leads.signup")
		require.NoError(t, err)
		require.Empty(t, m.Data)
		name := m.Header.Get(dlq.HeaderReplayObject)
		require.NotEmpty(t, name)
		ro, err := dlq.LoadReplayObject(context.Background(), b.js, name)
		require.NoError(t, err)
		require.True(t, bytes.Equal(payload, ro.Payload), "replayed payload byte for byte")
		require.Equal(t, []int{0}, ro.Items)
		require.Equal(t, []string{name}, b.objects(t), "the entry's object is removed with it")

		require.NoError(t, dlq.DeleteReplayObject(context.Background(), b.js, name))
		_, err = dlq.LoadReplayObject(context.Background(), b.js, name)
		require.ErrorIs(t, err, dlq.ErrObjectGone)
	}
}

func TestALongItemListIsSummarisedInTheHeaderAndCompleteInTheRecord(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	var items []int
	for i := range 10000 {
		items = append(items, 2*i) // no ranges to shorten it
	}
	r := rec("batch", outcome.Validation, 3, `{"leads":[]}`)
	r.Items = items
	r.Error = "mapping: emails[0].email: not an email (and 9999 more items)"
	got := b.publish(t, r)
	require.Equal(t, items, got.Items)
	require.Equal(t, `{"leads":[]}`, string(got.Payload))

	raw, err := b.dlq.GetMsg(context.Background(), got.ID)
	require.NoError(t, err)
	require.Empty(t, raw.Header.Get(dlq.HeaderItems))
	require.Equal(t, "10000", raw.Header.Get(dlq.HeaderItemsCount))
	require.True(t, strings.HasPrefix(raw.Header.Get(dlq.HeaderItemsSummary), "0,2,4,"))
	require.Less(t, len(raw.Header.Get(dlq.HeaderItemsSummary)), 200)
	require.Equal(t, `{"leads":[]}`, string(raw.Data), "a payload that fits stays in the entry")

	// Purging the entry removes its object.
	b.requirePurged(t, dlq.Filter{IDs: []uint64{got.ID}}, 1)
}

func TestPurgeAllRemovesTheObjectsOfThePurgedEntries(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	b.publish(t, rec("signup", outcome.Permanent, 1, string(nearLimit(b))))
	b.publish(t, rec("signup", outcome.Permanent, 2, `{}`))
	require.Len(t, b.objects(t), 1)
	b.requirePurged(t, dlq.Filter{All: true}, 2)
}

func TestAReplayObjectNameMustBeAReplayObject(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	got := b.publish(t, rec("signup", outcome.Permanent, 1, string(nearLimit(b))))
	_, err := dlq.LoadReplayObject(context.Background(), b.js, got.Object)
	require.ErrorContains(t, err, "not a replay object")
	require.Error(t, dlq.DeleteReplayObject(context.Background(), b.js, got.Object))
	again, err := b.store.Get(context.Background(), got.ID)
	require.NoError(t, err)
	require.Equal(t, got.Payload, again.Payload)
}

func TestItemRangesRoundTrip(t *testing.T) {
	t.Parallel()
	require.Equal(t, "0-9999", dlq.FormatItems(func() []int {
		s := make([]int, 10000)
		for i := range s {
			s[i] = i
		}
		return s
	}()))
	require.Equal(t, "0,1,3-5,9", dlq.FormatItems([]int{0, 1, 3, 4, 5, 9}))
	got, err := dlq.ParseItems("9, 3-5,0,1")
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 3, 4, 5, 9}, got)
	for _, bad := range []string{"5-3", "1-", "-", "0-99999999"} {
		_, err := dlq.ParseItems(bad)
		require.Error(t, err, bad)
	}
}

func TestTheSameFailurePublishedTwiceKeepsOneEntryAndOneObject(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	r := rec("signup", outcome.Permanent, 1, string(nearLimit(b)))
	first := b.publish(t, r)
	again := b.publish(t, r)
	require.Equal(t, first.ID, again.ID, "stored once")
	require.Equal(t, []string{first.Object}, b.objects(t), "the duplicate's object is removed")
	require.Equal(t, first.Payload, again.Payload)
}

func TestAnEntryWhoseObjectIsGoneIsListedButNeitherShownNorReplayed(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	got := b.publish(t, rec("signup", outcome.Permanent, 1, string(nearLimit(b))))
	obs, err := b.js.ObjectStore(context.Background(), dlq.PayloadsBucket)
	require.NoError(t, err)
	require.NoError(t, obs.Delete(context.Background(), got.Object))

	_, err = b.store.Get(context.Background(), got.ID)
	require.ErrorContains(t, err, "purge the entry")
	listed, err := b.store.List(context.Background(), dlq.Filter{})
	require.NoError(t, err)
	require.Len(t, listed, 1)
	_, err = b.store.Replay(context.Background(), dlq.Filter{IDs: []uint64{got.ID}}, dlq.ReplayOptions{})
	require.ErrorContains(t, err, "purge the entry")
	info, err := b.leads.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing replayed")
	n, err := b.store.Purge(context.Background(), dlq.Filter{IDs: []uint64{got.ID}})
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// An object left by a dead letter whose publish failed after its object
// was stored is named by no entry: a sweep removes it, and nothing else.
func TestSweepRemovesOnlyThisStreamsObjectsThatNoEntryNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupLimit(t, 64<<10)
	kept := b.publish(t, rec("signup", outcome.Permanent, 1, string(nearLimit(b))))
	require.True(t, strings.HasPrefix(kept.Object, "dlq."+b.store.Name()+"."), "an entry's object is named after its stream: %s", kept.Object)
	obs, err := b.js.ObjectStore(ctx, dlq.PayloadsBucket)
	require.NoError(t, err)
	orphan := "dlq." + b.store.Name() + ".ksync-dlq-signup-2-permanent-ab12.0011223344556677"
	others := []string{
		"dlq.OTHER_DLQ.ksync-dlq-x-1-permanent-cd34.8899aabbccddeeff", // another stream's
		"dlq.ksync-dlq-signup-3-permanent-ef56.0123456789abcdef",      // named before objects named their stream
		"replay.ksync-replay-0a1b2c",                                  // the worker removes it
	}
	for _, name := range append([]string{orphan}, others...) {
		_, err := obs.PutBytes(ctx, name, []byte(`{"payload":"e30="}`))
		require.NoError(t, err)
	}

	n, err := b.store.Sweep(ctx, time.Hour)
	require.NoError(t, err)
	require.Zero(t, n, "an object younger than the grace may be an entry's about to be published")
	n, err = b.store.Sweep(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.ElementsMatch(t, append([]string{kept.Object}, others...), b.objects(t))
	got, err := b.store.Get(ctx, kept.ID)
	require.NoError(t, err)
	require.Equal(t, nearLimit(b), got.Payload, "the entry still reads its payload")
}

func TestAnEntryWhoseObjectIsGoneSaysSoNamingThePackageOnce(t *testing.T) {
	t.Parallel()
	b := setupLimit(t, 64<<10)
	var items []int
	for i := range 10000 {
		items = append(items, 2*i)
	}
	r := rec("batch", outcome.Validation, 3, `{"leads":[]}`)
	r.Items = items
	got := b.publish(t, r)
	obs, err := b.js.ObjectStore(context.Background(), dlq.PayloadsBucket)
	require.NoError(t, err)
	require.NoError(t, obs.Delete(context.Background(), got.Object))

	_, err = b.store.Get(context.Background(), got.ID)
	require.ErrorIs(t, err, jetstream.ErrObjectNotFound)
	require.Contains(t, err.Error(), "purge the entry, its payload is gone")
	require.True(t, strings.HasPrefix(err.Error(), "dlq: "), err.Error())
	require.Equal(t, 1, strings.Count(err.Error(), "dlq: "), "each package names itself once: %s", err.Error())
}
