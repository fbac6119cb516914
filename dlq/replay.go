package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/kustomer-sync/kustomer-sync/overflow"
)

// ReplayOptions tunes [Store.Replay]. The zero value replays for real, as
// fast as JetStream acknowledges, without progress reports or checks.
type ReplayOptions struct {
	DryRun   bool                  // list what would be replayed; publish and delete nothing
	Rate     float64               // messages per second; 0 = unlimited
	Progress func(done, total int) // called after each entry, from the calling goroutine; may be nil
	// KeyBucket is the KV bucket of the replay key (default KeyBucketDefault).
	KeyBucket string
	// Check is called with each entry before it is republished, and in a
	// dry run. An error keeps the entry in the stream, is reported in
	// [ReplayResult.Kept], and the replay goes on with the next entry. The
	// CLI checks that the entry's workflow still consumes its subject. May
	// be nil.
	Check func(ctx context.Context, r Record) error
}

// ReplayResult reports what [Store.Replay] did.
type ReplayResult struct {
	// Replayed counts the entries republished and deleted.
	Replayed int
	// Skipped counts the entries whose republish JetStream had already
	// stored (an earlier or concurrent replay of the same entry, verified by
	// its replay id and signature); deleted.
	Skipped int
	// Entries are the entries replayed or skipped, or, in a dry run, those
	// that would be.
	Entries []Record
	// Kept are the entries left in the stream because Check refused them,
	// or because their event key is too long to replay
	// ([ErrEventKeyTooLong]).
	Kept []KeptEntry
	// Gone are IDs the filter named that are no longer in the stream: an
	// earlier or concurrent replay or purge removed them.
	Gone []uint64
}

// KeptEntry is an entry [Store.Replay] did not replay, and why.
type KeptEntry struct {
	Record Record
	Reason error
}

// Replay republishes each entry matching f to its original subject: the
// payload byte for byte, with the [Replay] instructions (the entry, its
// workflow, the failed items, the original event's identity and history)
// signed with the deployment's replay key (see [LoadReplayKey]) under
// Nats-Msg-Id [ReplayMsgID]. Each entry is deleted only after JetStream
// stored its republish as new, or reported it stored by an earlier replay
// of the same entry, so an interrupted replay loses nothing and can simply
// be run again; an entry another process replayed or purged meanwhile is
// not an error.
//
// f must select something (IDs, a criterion, or All). An ID the stream
// never held (above its last sequence) is an error wrapping [ErrNotFound],
// returned before anything is replayed; an ID already removed is reported in
// Gone. Entries are replayed oldest first, one at a time, at most opts.Rate
// per second. Replay stops at the first error and returns it with the
// result so far; an entry without an original subject is such an error.
func (s *Store) Replay(ctx context.Context, f Filter, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if f.empty() && !f.All {
		return res, errEmptyFilter("replay")
	}
	if opts.Rate < 0 || math.IsNaN(opts.Rate) {
		return res, fmt.Errorf("dlq: replay: rate %v: want 0 (unlimited) or more", opts.Rate)
	}
	entries, gone, err := s.listNamed(ctx, f)
	if err != nil {
		return res, err
	}
	res.Gone = gone
	entries = slices.DeleteFunc(entries, func(r Record) bool {
		err := s.replayable(r)
		if err == nil && opts.Check != nil {
			err = opts.Check(ctx, r)
		}
		if err != nil {
			res.Kept = append(res.Kept, KeptEntry{Record: r, Reason: err})
			return true
		}
		return false
	})
	if opts.DryRun {
		res.Entries = entries
		return res, nil
	}
	if len(entries) == 0 {
		return res, nil
	}
	key, err := LoadReplayKey(ctx, s.js, opts.KeyBucket, s.stream.CachedInfo().Config.Replicas)
	if err != nil {
		return res, err
	}
	limiter := rate.NewLimiter(rate.Inf, 1)
	if opts.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	for i, r := range entries {
		if err := limiter.Wait(ctx); err != nil {
			return res, fmt.Errorf("dlq: replay: %w", err)
		}
		dup, err := s.republish(ctx, key, r)
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

// listNamed lists the entries f selects, and the IDs it names that are
// already gone.
func (s *Store) listNamed(ctx context.Context, f Filter) (entries []Record, gone []uint64, err error) {
	entries, err = s.List(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	for _, id := range f.IDs {
		if !slices.ContainsFunc(entries, func(r Record) bool { return r.ID == id }) && !slices.Contains(gone, id) {
			if _, err := s.Get(ctx, id); errors.Is(err, ErrNotFound) {
				gone = append(gone, id)
			}
		}
	}
	slices.Sort(gone)
	return entries, gone, nil
}

// replayable is nil when r's replay fits in one message's headers, and
// otherwise an error wrapping [ErrEventKeyTooLong]: a replay carries the
// event key whole, in a signed header, as the worker derives the items'
// idempotency keys from it, and JetStream refuses headers over 64 KiB.
// Every other header of a replay is bounded; the payload and a long item
// list move to an object when they do not fit.
func (s *Store) replayable(r Record) error {
	rp := s.replayFor(r)
	rp.EventKey = cmp.Or(rp.EventKey, r.MsgID)
	if len(rp.EventKey) <= MaxValueLen {
		return nil
	}
	// The largest headers the replay can have: a replay id, the items
	// (unless too many: they go to the object) and an object named after
	// the replay id.
	id := ReplayMsgID(s.name, time.Time{}, r)
	rp.Object = replayObjectPrefix + id
	if len(FormatItems(rp.Items)) > maxItemsLen {
		rp.Items = nil
	}
	h := (&ReplayKey{b: make([]byte, replayKeyLen)}).header(r.Subject, rp, nil)
	h.Set(nats.MsgIdHdr, id)
	if n := overflow.HeaderSize(&nats.Msg{Header: h}); n+overflow.Headroom > overflow.MaxHeaderBytes {
		return fmt.Errorf("%w: entry %d: its event key, the original Nats-Msg-Id, is %d bytes: a replay's headers would be %d bytes, over the %d JetStream accepts, and without the whole key the replay would not be recognised as the same event; purge the entry, or publish its payload again under a shorter Nats-Msg-Id (a new event)",
			ErrEventKeyTooLong, r.ID, len(rp.EventKey), n, overflow.MaxHeaderBytes)
	}
	return nil
}

// replayFor is the replay of r: what the worker needs to run it again as
// the event it was, and its history. The event key is kept whole, the
// original id (for people) is bounded ([BoundedValue]).
func (s *Store) replayFor(r Record) Replay {
	first := r.FirstFailure
	if first.IsZero() {
		first = r.LastFailure
	}
	return Replay{
		Stream:       s.name,
		Entry:        r.ID,
		Workflow:     r.Workflow,
		Items:        r.Items,
		EventKey:     r.EventKey,
		EventID:      BoundedValue(r.MsgID),
		Run:          r.Run,
		OriginalRun:  cmp.Or(r.OriginalRun, r.Run),
		Attempts:     r.PriorAttempts + r.Attempts,
		Count:        r.Replays + 1,
		FirstFailure: first,
		TraceID:      r.TraceID,
		SpanID:       r.SpanID,
	}
}

// republish publishes r's event again; dup reports that JetStream had it
// already, from an earlier replay of this same entry.
func (s *Store) republish(ctx context.Context, key *ReplayKey, r Record) (dup bool, err error) {
	msg, id, err := s.replayMessage(ctx, key, r)
	if err != nil {
		return false, err
	}
	h := msg.Header
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		return false, fmt.Errorf("dlq: replay entry %d to %s: %w", r.ID, r.Subject, err)
	}
	if !ack.Duplicate {
		return false, nil
	}

	// The id is derived from this entry's stream, sequence and content, so a
	// duplicate is an earlier replay of it; check the stored message says
	// the same, when it is still there.
	st, err := s.js.Stream(ctx, ack.Stream)
	if err != nil {
		return false, fmt.Errorf("dlq: replay entry %d: check the earlier replay in %s: %w", r.ID, ack.Stream, err)
	}
	prev, err := st.GetMsg(ctx, ack.Sequence)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("dlq: replay entry %d: check the earlier replay in %s: %w", r.ID, ack.Stream, err)
	case prev.Header.Get(nats.MsgIdHdr) != id || prev.Header.Get(HeaderReplaySig) != h.Get(HeaderReplaySig):
		return false, fmt.Errorf("dlq: replay entry %d: %s message %d holds replay id %s but is not this entry's replay; entry kept",
			r.ID, ack.Stream, ack.Sequence, id)
	}
	return true, nil
}

// replayMessage is the replay of r, signed with key, and its Nats-Msg-Id
// (also set on the message).
func (s *Store) replayMessage(ctx context.Context, key *ReplayKey, r Record) (*nats.Msg, string, error) {
	if r.Subject == "" {
		return nil, "", fmt.Errorf("dlq: replay entry %d: no original subject (header %s)", r.ID, HeaderSubject)
	}
	if err := s.replayable(r); err != nil {
		return nil, "", err
	}
	rp := s.replayFor(r)
	if rp.EventKey == "" {
		// An entry written before event keys were recorded: the key the
		// worker derived from the original event.
		rp.EventKey = r.MsgID
		if rp.EventKey == "" && r.StreamSeq != 0 {
			stream, err := s.js.StreamNameBySubject(ctx, r.Subject)
			if err != nil {
				return nil, "", fmt.Errorf("dlq: replay entry %d: no stream captures %s: %w", r.ID, r.Subject, err)
			}
			rp.EventKey = stream + ":" + strconv.FormatUint(r.StreamSeq, 10)
		}
	}
	id := ReplayMsgID(s.name, s.stream.CachedInfo().Created, r)
	msg := &nats.Msg{Subject: r.Subject, Header: key.header(r.Subject, rp, r.Payload), Data: r.Payload}
	msg.Header.Set(nats.MsgIdHdr, id)
	if err := s.replayObject(ctx, &rp, r, id, overflow.Fits(s.js, msg)); err != nil {
		return nil, "", err
	}
	if rp.Object != "" {
		// The body is empty; the signed header names the object, whose
		// content the object store checks against its digest.
		msg = &nats.Msg{Subject: r.Subject, Header: key.header(r.Subject, rp, nil)}
		msg.Header.Set(nats.MsgIdHdr, id)
	}
	return msg, id, nil
}
