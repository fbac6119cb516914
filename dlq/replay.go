package dlq

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// ReplayOptions tunes [Store.Replay]. The zero value replays for real, as
// fast as JetStream acknowledges, without progress reports.
type ReplayOptions struct {
	DryRun   bool                  // list what would be replayed; publish and delete nothing
	Rate     float64               // messages per second; 0 = unlimited
	Progress func(done, total int) // called after each entry, from the calling goroutine; may be nil
}

// ReplayResult reports what [Store.Replay] did.
type ReplayResult struct {
	Replayed int      // entries republished (and deleted)
	Skipped  int      // entries already republished by an earlier replay (JetStream reported a duplicate); deleted
	Entries  []Record // the entries replayed or skipped, or, in a dry run, that would be
}

// ReplayMsgID is the Nats-Msg-Id of the republished event of entry id in
// stream: "ksync-replay-<stream>-<id>". Within the original stream's
// duplicate window, replaying an entry twice stores the event once.
func ReplayMsgID(stream string, id uint64) string {
	return "ksync-replay-" + stream + "-" + strconv.FormatUint(id, 10)
}

// Replay republishes each entry matching f to its original subject: the
// payload byte for byte, [HeaderReplayItems] when the entry names items,
// [HeaderReplayOf], [HeaderReplayWorkflow], the original [HeaderMsgID] and
// [HeaderStreamSeq] when known, and Nats-Msg-Id [ReplayMsgID].
// Each entry is deleted only after JetStream acknowledged its republish, so
// an interrupted replay loses nothing and can simply be run again.
//
// f must select something (IDs, a criterion, or All). Entries are replayed
// oldest first, one at a time, at most opts.Rate per second. Replay stops at
// the first error and returns it with the result so far; an entry without an
// original subject is such an error.
func (s *Store) Replay(ctx context.Context, f Filter, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if f.empty() && !f.All {
		return res, errEmptyFilter("replay")
	}
	if opts.Rate < 0 || math.IsNaN(opts.Rate) {
		return res, fmt.Errorf("dlq: replay: rate %v: want 0 (unlimited) or more", opts.Rate)
	}
	entries, err := s.List(ctx, f)
	if err != nil {
		return res, err
	}
	if opts.DryRun {
		res.Entries = entries
		return res, nil
	}
	limiter := rate.NewLimiter(rate.Inf, 1)
	if opts.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	for i, r := range entries {
		if err := limiter.Wait(ctx); err != nil {
			return res, fmt.Errorf("dlq: replay: %w", err)
		}
		dup, err := s.republish(ctx, r)
		if err != nil {
			return res, err
		}
		if _, err := s.delete(ctx, r.ID); err != nil {
			return res, err
		}
		if dup {
			res.Skipped++
		} else {
			res.Replayed++
		}
		res.Entries = append(res.Entries, r)
		if opts.Progress != nil {
			opts.Progress(i+1, len(entries))
		}
	}
	return res, nil
}

// republish publishes r's event again; dup reports that JetStream had it
// already.
func (s *Store) republish(ctx context.Context, r Record) (dup bool, err error) {
	if r.Subject == "" {
		return false, fmt.Errorf("dlq: replay entry %d: no original subject (header %s)", r.ID, HeaderSubject)
	}
	h := nats.Header{}
	if len(r.Items) > 0 {
		h.Set(HeaderReplayItems, FormatItems(r.Items))
	}
	h.Set(HeaderReplayOf, strconv.FormatUint(r.ID, 10))
	// The original identity travels with the replay so the worker derives
	// the same idempotency keys: items created before are found, not
	// created again.
	if r.MsgID != "" {
		h.Set(HeaderMsgID, r.MsgID)
	}
	if r.StreamSeq != 0 {
		h.Set(HeaderStreamSeq, strconv.FormatUint(r.StreamSeq, 10))
	}
	if r.Workflow != "" {
		h.Set(HeaderReplayWorkflow, r.Workflow)
	}
	msg := &nats.Msg{Subject: r.Subject, Header: h, Data: r.Payload}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(ReplayMsgID(s.name, r.ID)))
	if err != nil {
		return false, fmt.Errorf("dlq: replay entry %d to %s: %w", r.ID, r.Subject, err)
	}
	return ack.Duplicate, nil
}
