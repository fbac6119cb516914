package dlq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/scan"
)

// Filter selects dead-letter entries. Criteria combine with AND; the zero
// Filter matches every entry, but [Store.Replay] and [Store.Purge] refuse it
// unless All is set, so that "replay everything" is always explicit.
type Filter struct {
	IDs      []uint64        // only these entries (none: any)
	Workflow string          // only this workflow
	Class    outcome.Outcome // only this class (a failure); None: any
	Since    time.Time       // dead-lettered at or after
	Grep     string          // substring of the error or the payload (case-sensitive)
	All      bool            // explicitly every entry, for Replay and Purge
}

func (f Filter) empty() bool {
	return len(f.IDs) == 0 && f.Workflow == "" && f.Class == outcome.None && f.Since.IsZero() && f.Grep == ""
}

// match reports whether r passes every criterion but IDs, which the scan
// applies itself.
func (f Filter) match(r Record) bool {
	switch {
	case f.Workflow != "" && r.Workflow != f.Workflow:
		return false
	case f.Class != outcome.None && r.Class != f.Class:
		return false
	case !f.Since.IsZero() && r.Time.Before(f.Since):
		return false
	case f.Grep != "" && !strings.Contains(r.Error, f.Grep) && !bytes.Contains(r.Payload, []byte(f.Grep)):
		return false
	}
	return true
}

// Store reads and manages one dead-letter stream. It is safe for concurrent
// use; its methods hold no state between calls, so several operators (or
// replicas) may work on the same stream at once: an entry replayed twice
// concurrently is still republished once.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
}

// OpenStore opens the dead-letter stream named stream ([StreamDefault] if
// empty). It fails if the stream does not exist.
func OpenStore(ctx context.Context, js jetstream.JetStream, stream string) (*Store, error) {
	if stream == "" {
		stream = StreamDefault
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("dlq: stream %s does not exist (the worker creates it on start): %w", stream, err)
		}
		return nil, fmt.Errorf("dlq: open stream %s: %w", stream, err)
	}
	return &Store{js: js, stream: s, name: stream}, nil
}

// Name is the stream's name.
func (s *Store) Name() string { return s.name }

// JetStream is the JetStream context the store works through.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// List returns the entries that match f, oldest first, complete with what
// their objects hold (payloads too large for an entry are read into
// memory). Entries with a malformed header are listed with that field zero;
// an entry whose object cannot be read is listed with what it holds, and
// [Store.Replay] refuses it. An ID f names that the
// stream never held (above its last sequence) is an error wrapping
// [ErrNotFound]; one already removed (replayed or purged) is left out.
func (s *Store) List(ctx context.Context, f Filter) ([]Record, error) {
	var out []Record
	err := s.each(ctx, f, func(r Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// Get returns entry id, complete with what its object holds (see
// [Publish]), or an error wrapping [ErrNotFound], or an error if its object
// cannot be read.
func (s *Store) Get(ctx context.Context, id uint64) (Record, error) {
	r, err := s.get(ctx, id)
	if err != nil {
		return r, err
	}
	return r, r.incomplete
}

// get reads entry id and its object; a record whose object cannot be read is
// returned marked incomplete, without an error.
func (s *Store) get(ctx context.Context, id uint64) (Record, error) {
	m, err := s.stream.GetMsg(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return Record{}, notFoundError(fmt.Sprintf("dlq: no entry %d in %s: replayed, purged or never written (see 'kustomer-sync dlq list')", id, s.name))
		}
		return Record{}, fmt.Errorf("dlq: get entry %d from %s: %w", id, s.name, err)
	}
	r, _ := RecordFromMsg(m) // a malformed header still shows the entry
	_ = s.readObject(ctx, &r)
	return r, nil
}

// Purge deletes the entries that match f, and their objects, and returns
// how many entries it deleted. f must select something (IDs, a criterion, or
// All). An id that is already gone is not counted and not an error. It then
// sweeps objects no entry names (Sweep with OrphanGrace), as best it can.
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	if f.empty() && !f.All {
		return 0, errEmptyFilter("purge")
	}
	n, err := s.purge(ctx, f)
	if err == nil {
		_, _ = s.Sweep(ctx, OrphanGrace) // best effort: the next purge tries again
	}
	return n, err
}

func (s *Store) purge(ctx context.Context, f Filter) (int, error) {
	if f.All && f.empty() {
		return s.purgeAll(ctx)
	}
	entries, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range entries {
		ok, err := s.delete(ctx, r.ID)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// Stats counts the entries that match f by workflow and class.
func (s *Store) Stats(ctx context.Context, f Filter) (map[string]map[outcome.Outcome]int, error) {
	out := map[string]map[outcome.Outcome]int{}
	err := s.each(ctx, f, func(r Record) error {
		byClass := out[r.Workflow]
		if byClass == nil {
			byClass = map[outcome.Outcome]int{}
			out[r.Workflow] = byClass
		}
		byClass[r.Class]++
		return nil
	})
	return out, err
}

// delete removes entry id, then its object; false if it was already gone
// (another process replayed or purged it meanwhile). The entry goes first,
// so no entry ever names a missing object.
func (s *Store) delete(ctx context.Context, id uint64) (bool, error) {
	obj := s.objectOf(ctx, id)
	if err := s.stream.DeleteMsg(ctx, id); err != nil {
		// The server answers a missing message with a generic deletion
		// failure: look.
		if _, gerr := s.stream.GetMsg(ctx, id); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("dlq: delete entry %d from %s: %w", id, s.name, err)
	}
	if obj != "" {
		if err := deleteObject(ctx, s.js, obj); err != nil {
			return true, err
		}
	}
	return true, nil
}

// purgeAll empties the stream up to its last entry now, then removes the
// objects of the entries purged. Entries dead-lettered meanwhile are kept,
// and so are their objects.
func (s *Store) purgeAll(ctx context.Context) (int, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("dlq: purge %s: %w", s.name, err)
	}
	if info.State.Msgs == 0 {
		return 0, nil
	}
	last := info.State.LastSeq
	var objects []string
	err = scan.Stream(ctx, s.stream, scan.Options{}, func(m *jetstream.RawStreamMsg) error {
		if o := m.Header.Get(HeaderObject); o != "" && m.Sequence <= last {
			objects = append(objects, o)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dlq: purge %s: %w", s.name, err)
	}
	if err := s.stream.Purge(ctx, jetstream.WithPurgeSequence(last+1)); err != nil {
		return 0, fmt.Errorf("dlq: purge %s: %w", s.name, err)
	}
	for _, o := range objects {
		if err := deleteObject(ctx, s.js, o); err != nil {
			return int(info.State.Msgs), err
		}
	}
	return int(info.State.Msgs), nil
}

// each calls fn for every entry matching f, oldest first.
func (s *Store) each(ctx context.Context, f Filter, fn func(Record) error) error {
	if len(f.IDs) > 0 {
		info, err := s.stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("dlq: %s: %w", s.name, err)
		}
		ids := slices.Clone(f.IDs)
		slices.Sort(ids)
		if last := ids[len(ids)-1]; ids[0] == 0 || last > info.State.LastSeq {
			bad := last
			if ids[0] == 0 {
				bad = 0
			}
			return s.neverHeld(bad, info.State.LastSeq)
		}
		for _, id := range slices.Compact(ids) {
			r, err := s.get(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if f.match(r) {
				if err := fn(r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var failed error // fn's, returned as it is
	err := scan.Stream(ctx, s.stream, scan.Options{Since: f.Since}, func(m *jetstream.RawStreamMsg) error {
		r, _ := RecordFromMsg(m)
		_ = s.readObject(ctx, &r) // listed even so; not replayed
		if !f.match(r) {
			return nil
		}
		failed = fn(r)
		return failed
	})
	if err != nil && failed == nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return err
}

// neverHeld is the error for an entry id above the stream's last sequence.
func (s *Store) neverHeld(id, last uint64) error {
	if last == 0 {
		return notFoundError(fmt.Sprintf("dlq: no entry %d in %s: it has never held an entry", id, s.name))
	}
	return notFoundError(fmt.Sprintf("dlq: no entry %d in %s: its entries go up to %d (see 'kustomer-sync dlq list')", id, s.name, last))
}

func errEmptyFilter(op string) error {
	return fmt.Errorf("dlq: %s: empty filter: name entries, give a criterion, or set All", op)
}
