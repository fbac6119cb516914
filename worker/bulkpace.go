package worker

import (
	"slices"
	"time"
)

// chainDue is the earliest job w is polled given the job sent before it
// (in Kustomer's queue, w is not done before it): while that one runs and
// was found running at most once (a job found running again and again,
// maybe stuck, holds none back), not before its next poll has been
// answered (prevCh, closed then); and when Kustomer is seen to run jobs
// one after another, the gap after it (after its end, or its next poll).
// It returns the gap, and false when there is no such job or nothing to
// go by.
func (b *batcher) chainDue(w *jobWatch) (t time.Time, gap time.Duration, prevCh <-chan struct{}, ok bool) {
	b.estMu.Lock()
	gap = b.gap
	b.estMu.Unlock()
	w.mu.Lock()
	p := w.prev
	w.mu.Unlock()
	if p == nil {
		return time.Time{}, 0, nil, false
	}
	p.mu.Lock()
	due, end, misses, ch := p.due, p.end, p.misses, p.changed
	p.mu.Unlock()
	switch {
	case !end.IsZero() && gap > 0:
		return end.Add(gap), gap, nil, true
	case end.IsZero() && !due.IsZero() && (gap > 0 || misses <= 1):
		return due.Add(gap), gap, ch, true
	}
	return time.Time{}, 0, nil, false
}

// probeDue counts the jobs polled while a gap is in force and reports
// whether this one is polled at its own time instead.
func (b *batcher) probeDue() bool {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	b.probes++
	return b.probes%bulkGapProbe == 0
}

// notSerial drops the gap: a job polled at its own time was complete.
func (b *batcher) notSerial() {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	b.gap, b.votes = 0, nil
}

// shortestRun is the least time from submission a job was found complete
// in.
func (b *batcher) shortestRun() time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	return b.shortest
}

// learnGap learns the gap from job w's poll at now: found complete or
// not, at a time the gap set (chained) or the estimate did. It returns
// the gap.
func (b *batcher) learnGap(w *jobWatch, now time.Time, complete, chained bool) time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	switch {
	case chained && complete:
		if w.polls == 1 {
			if b.gap = b.gap * 99 / 100; b.gap < bulkEstimateFloor {
				b.gap, b.votes = 0, nil
			}
		}
	case chained:
		b.gap = min(b.gap*5/4, b.jobTimeout())
	case complete:
		if d := now.Sub(w.sent); b.shortest == 0 || d < b.shortest {
			b.shortest = d
		}
		end, sent := w.prevEnd()
		if end.IsZero() || !end.After(w.sent) {
			b.votes = b.votes[:0] // not in flight together
			break
		}
		after := now.Sub(end) - w.sent.Sub(sent)
		if after < b.shortest/2 {
			b.votes = b.votes[:0]
			break
		}
		if b.votes = append(b.votes, after); len(b.votes) >= bulkGapVotes {
			b.gap = max(b.gap, slices.Min(b.votes))
			b.votes = b.votes[:0]
		}
	}
	return b.gap
}

// expected is how long a job is expected to take.
func (b *batcher) expected() time.Duration {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	return b.estimate
}

// learn updates the estimate from a poll elapsed after submission. It
// tracks a high quantile of the jobs' durations, so that about one job in
// forty needs a second poll: a job found complete at its first poll
// lowers it by 0.5 %, one found running raises it above elapsed by a
// quarter (every job waiting for its first poll then waits longer too);
// while no job was lately seen running for even half of it (jobs far
// faster than the estimate), it halves.
func (b *batcher) learn(elapsed time.Duration, complete, first bool) {
	b.estMu.Lock()
	defer b.estMu.Unlock()
	switch {
	case complete && first:
		b.slowest = b.slowest * 199 / 200
		b.estimate = max(b.estimate*199/200, bulkEstimateFloor)
		if b.slowest < b.estimate/2 {
			b.estimate = max(b.estimate/2, b.slowest*5/4, bulkEstimateFloor)
		}
	case !complete:
		b.slowest = max(b.slowest, elapsed)
		b.estimate = min(max(b.estimate, elapsed*5/4, elapsed+bulkEstimateFloor), b.jobTimeout())
	}
	b.w.metrics.BulkEstimate.WithLabelValues(b.f.wf.Name).Set(b.estimate.Seconds())
}
