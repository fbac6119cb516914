package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// paceKeyPrefix + a workflow's name is the key of what its replicas
	// learnt of its bulk jobs' durations (bulkpace.Learnt, as text).
	paceKeyPrefix = "bulkpace."
	// BulkFeedKeepDefault is how long a [BulkFeed] remembers a request.
	BulkFeedKeepDefault = time.Hour
)

// BulkFeed is what the whole deployment's replicas record of their bulk
// requests, as [Ledger.FollowBulk] reads it: when each was sent (Kustomer
// runs the org's jobs in one queue, whoever sent them). Its zero value is
// empty and ready; it is safe for concurrent use.
type BulkFeed struct {
	mu    sync.Mutex
	seen  map[string]time.Time // by request token
	times []time.Time          // sorted
}

// Between is how many bulk requests were sent after a and before b, as
// far as the feed knows.
func (f *BulkFeed) Between(a, b time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, _ := slices.BinarySearchFunc(f.times, a, time.Time.Compare)
	for i < len(f.times) && !f.times[i].After(a) {
		i++
	}
	j, _ := slices.BinarySearchFunc(f.times, b, time.Time.Compare)
	return max(j-i, 0)
}

// add notes request token sent at sent (once), and forgets the requests
// sent longer than keep before the latest.
func (f *BulkFeed) add(token string, sent time.Time, keep time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]time.Time{}
	}
	if _, ok := f.seen[token]; ok || sent.IsZero() {
		return
	}
	f.seen[token] = sent
	i, _ := slices.BinarySearchFunc(f.times, sent, time.Time.Compare)
	f.times = slices.Insert(f.times, i, sent)
	if cut := f.times[len(f.times)-1].Add(-keep); f.times[0].Before(cut) {
		n, _ := slices.BinarySearchFunc(f.times, cut, time.Time.Compare)
		f.times = slices.Delete(f.times, 0, n)
		for t, at := range f.seen {
			if at.Before(cut) {
				delete(f.seen, t)
			}
		}
	}
}

// FollowBulk fills feed with the bulk requests every replica records
// (BatchSending) from now on, and hands learnt what a workflow's replicas
// share of its jobs' durations (SharePace), the latest of each first, until
// ctx ends. (Requests sent before it started are not read: the bucket
// keeps their records for days, and they are no later than any request
// this replica sends.) It returns an error only when a watch cannot start
// or stops on its own.
func (l *Ledger) FollowBulk(ctx context.Context, feed *BulkFeed, learnt func(workflow string, v []byte)) error {
	sends, err := l.kv.Watch(ctx, batchKeyPrefix+"*", jetstream.IgnoreDeletes(), jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("ledger: follow bulk requests: %w", err)
	}
	defer func() { _ = sends.Stop() }()
	paces, err := l.kv.Watch(ctx, paceKeyPrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("ledger: follow bulk job durations: %w", err)
	}
	defer func() { _ = paces.Stop() }()
	keep := max(BulkFeedKeepDefault, 2*l.lease)
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-sends.Updates():
		case e, ok = <-paces.Updates():
		}
		switch {
		case !ok && ctx.Err() != nil:
			return nil
		case !ok:
			return errors.New("ledger: follow bulk requests: the watch stopped")
		case e == nil:
			// the latest values are all in
		case strings.HasPrefix(e.Key(), batchKeyPrefix):
			feed.add(strings.TrimPrefix(e.Key(), batchKeyPrefix), batchRecord(e).Sent, keep)
		case learnt != nil:
			learnt(strings.TrimPrefix(e.Key(), paceKeyPrefix), e.Value())
		}
	}
}

// SharePace records what this replica learnt of workflow's bulk jobs'
// durations (v), for the workflow's other replicas and for the next to
// start (FollowBulk hands it to them).
func (l *Ledger) SharePace(ctx context.Context, workflow string, v []byte) error {
	if _, err := l.kv.Put(ctx, paceKeyPrefix+workflow, v); err != nil {
		return fmt.Errorf("ledger: share bulk job durations: %w", err)
	}
	return nil
}
