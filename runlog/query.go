package runlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/scan"
)

// Filter selects runs. Criteria combine with AND; the zero value selects
// every run.
type Filter struct {
	Workflow string    // only this workflow
	Status   Status    // only this status
	Since    time.Time // started at or after (stored at or after, for the scan)
	Limit    int       // at most this many, the newest; 0 = no limit
}

// List returns the runs that match f, newest first (by start time; runs
// that started together in the order they ended, latest first). With a Limit and no
// Since, it reads back from the end of the stream in growing windows, so
// listing the last 50 runs costs about 50 reads, not the whole log.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("runlog: negative limit %d", f.Limit)
	}
	if f.Workflow != "" && !validToken(f.Workflow) {
		return nil, fmt.Errorf("runlog: workflow %q is not a subject token", f.Workflow)
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, fmt.Errorf("runlog: status %q: want one of %v", f.Status, Statuses)
	}
	filter := l.subject(cmp.Or(f.Workflow, "*"), cmp.Or(string(f.Status), "*"), "*")
	keep := func(r Record) bool { return f.Since.IsZero() || !r.Started.Before(f.Since) }

	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("runlog: %w", err)
	}
	st := info.State
	if st.Msgs == 0 {
		return nil, nil
	}

	var runs []Record
	if f.Limit == 0 || !f.Since.IsZero() {
		err := l.scan(ctx, scan.Options{Filter: filter, Since: f.Since}, func(r Record) {
			if !keep(r) {
				return
			}
			runs = append(runs, r)
			if f.Limit > 0 && len(runs) > 2*f.Limit {
				runs = slices.Delete(runs, 0, len(runs)-f.Limit)
			}
		})
		if err != nil {
			return nil, err
		}
	} else {
		for window := uint64(max(2*f.Limit, 64)); ; window *= 2 {
			start := st.FirstSeq
			if st.LastSeq >= window && st.LastSeq-window+1 > st.FirstSeq {
				start = st.LastSeq - window + 1
			}
			runs = runs[:0]
			if err := l.scan(ctx, scan.Options{Filter: filter, StartSeq: start}, func(r Record) { runs = append(runs, r) }); err != nil {
				return nil, err
			}
			if len(runs) >= f.Limit || start <= st.FirstSeq {
				break
			}
		}
	}
	if f.Limit > 0 && len(runs) > f.Limit {
		runs = runs[len(runs)-f.Limit:]
	}
	// Newest first by start: the stream holds runs in the order they ended.
	slices.Reverse(runs)
	slices.SortStableFunc(runs, func(a, b Record) int { return b.Started.Compare(a.Started) })
	for i := range runs {
		if err := l.whole(ctx, &runs[i]); err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// Get returns the latest record of run id, or an error wrapping
// [ErrNotFound].
func (l *Log) Get(ctx context.Context, id string) (Record, error) {
	if id == "" {
		return Record{}, notFound("runlog: empty run ID")
	}
	m, err := l.stream.GetLastMsgForSubject(ctx, l.subject("*", "*", idToken(id)))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return Record{}, notFound(fmt.Sprintf("runlog: no run %s in %s (expired, or never written)", id, l.cfg.Stream))
		}
		return Record{}, fmt.Errorf("runlog: get run %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return Record{}, fmt.Errorf("runlog: run %s (seq %d): %w", id, m.Sequence, err)
	}
	return r, l.whole(ctx, &r)
}

// scan decodes the run records that opts select, oldest first, until those
// pending at the start are read. Records that do not decode are skipped: the
// log is diagnostics, not data.
func (l *Log) scan(ctx context.Context, opts scan.Options, fn func(Record)) error {
	err := scan.Stream(ctx, l.stream, opts, func(m *jetstream.RawStreamMsg) error {
		var r Record
		if json.Unmarshal(m.Data, &r) == nil {
			fn(r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("runlog: %w", err)
	}
	return nil
}
