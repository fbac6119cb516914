package bulkpace

// What the pacer learns from the answers to its polls: whether Kustomer
// runs jobs one after another (the queue's gap, and the jobs chained
// behind each other), and how long a job takes (the estimate).

import (
	"slices"
	"time"
)

// chainDue is the earliest job j is polled given the job started before
// it (in Kustomer's queue, j is not done before it): while that one runs
// and was found running at most once (a job found running again and
// again, maybe stuck, holds none back), not before its next poll has been
// answered (prevCh, closed then); and when Kustomer is seen to run jobs
// one after another, the gap after it (after its end, or its next poll).
// It returns the gap, and false when there is no such job or nothing to
// go by.
func (p *Pacer) chainDue(j *Job) (t time.Time, gap time.Duration, prevCh <-chan struct{}, ok bool) {
	p.mu.Lock()
	gap = p.gap
	p.mu.Unlock()
	j.mu.Lock()
	pj := j.prev
	j.mu.Unlock()
	if pj == nil {
		return time.Time{}, 0, nil, false
	}
	pj.mu.Lock()
	due, end, misses, ch := pj.due, pj.end, pj.misses, pj.changed
	pj.mu.Unlock()
	after := gap * time.Duration(p.slots(pj, j))
	switch {
	case !end.IsZero() && gap > 0:
		return end.Add(after), gap, nil, true
	case end.IsZero() && !due.IsZero() && (gap > 0 || misses <= 1):
		return due.Add(after), gap, ch, true
	case end.IsZero() && !due.IsZero():
		// Found running again and again (maybe stuck, or the first job
		// while the estimate is learnt): it puts none off, but one due
		// at the same time still waits for its answer.
		return due, 0, ch, false
	}
	return time.Time{}, 0, nil, false
}

// slots is how many jobs Kustomer runs from the end of job a to the end of
// job b sent after it in a queue run one after another: b, and every job
// the deployment sent between them.
func (p *Pacer) slots(a, b *Job) int {
	if p.cfg.Sends == nil || !a.known || !b.known {
		return 1
	}
	return 1 + max(p.cfg.Sends.Between(a.sent, b.sent), 0)
}

// probeDue counts the jobs polled while a gap is in force and reports
// whether this one is polled at its own time instead.
func (p *Pacer) probeDue() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes++
	return p.probes%gapProbe == 0
}

// notSerial drops the gap: a job polled at its own time was complete.
func (p *Pacer) notSerial() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropGap()
}

// completed notes that j was found complete.
func (p *Pacer) completed(j *Job) {
	if !j.known {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if j.sent.After(p.doneSent) {
		p.doneSent = j.sent
	}
}

// running notes that j was found running. When a job sent after it was
// found complete already, Kustomer does not run its jobs one after
// another (not all of them, not now): the gap is dropped. When it was
// polled a run time after the job before it completed (behind), as a job
// queued behind it would be complete, the jobs before it that completed
// late say nothing of a queue: their votes are dropped.
func (p *Pacer) running(j *Job, behind bool) {
	if !j.known {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if behind {
		p.votes = p.votes[:0]
	}
	if p.doneSent.After(j.sent) {
		p.dropGap()
	}
}

// shortestRun is the least time from submission a job was found complete
// in.
func (p *Pacer) shortestRun() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shortest
}

// learnGap learns the gap from job j's poll at now: found complete or
// not, at a time the gap set (chained) or the estimate did. It returns
// the gap.
func (p *Pacer) learnGap(j *Job, now time.Time, complete, chained bool) time.Duration {
	p.mu.Lock()
	before := p.gap
	switch {
	case chained && complete:
		if j.polls == 1 {
			if p.gap = p.gap * 99 / 100; p.gap < p.cfg.Floor {
				p.dropGap()
			}
		}
	case chained:
		p.gap = min(p.gap*5/4, p.cfg.Timeout)
	case complete:
		if d := now.Sub(j.sent); j.known && (p.shortest == 0 || d < p.shortest) {
			p.shortest = d
		}
		end, sent := j.prevEnd()
		if end.IsZero() || !end.After(j.sent) {
			p.votes = p.votes[:0] // not in flight together
			break
		}
		after := now.Sub(end) - j.sent.Sub(sent)
		if pj := j.prevJob(); pj != nil {
			after /= time.Duration(p.slots(pj, j))
		}
		if after < p.shortest/2 {
			p.votes = p.votes[:0]
			break
		}
		if p.votes = append(p.votes, after); len(p.votes) >= gapVotes {
			// A job found late says it completed later than it did: no
			// job runs longer than the shortest time from submission to
			// completion seen, so neither does a queue's step.
			slices.Sort(p.votes)
			p.gap = max(p.gap, min(p.votes[len(p.votes)/2], max(p.shortest, p.cfg.Floor)))
			p.votes = p.votes[:0]
		}
	}
	gap, l := p.gap, p.learnt()
	p.mu.Unlock()
	if before == 0 && gap > 0 {
		p.share(l) // the other replicas' jobs are in the same queue
	}
	return gap
}

// Expected is how long a job is expected to take.
func (p *Pacer) Expected() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.estimate
}

// learn updates the estimate from a poll elapsed after submission. It
// tracks a high quantile of the jobs' durations, so that about one job in
// forty needs a second poll: a job found complete at its first poll
// lowers it by 0.5 % (by 2 % while it is more than half again the
// longest a job was lately seen running: an estimate overshot while
// learning); one found running raises it above elapsed by a quarter
// (every job waiting for its first poll then waits longer too), and to
// twice elapsed when the poll before it found a job running too (jobs are
// far longer than the estimate: the first jobs of a deployment, or a
// change): a job of duration d costs about log₂(d / Initial) polls to
// learn, at most twice d of waiting.
func (p *Pacer) learn(elapsed time.Duration, complete, first bool) {
	raised := false
	p.mu.Lock()
	switch {
	case complete:
		p.streak = 0
		p.longest = max(p.longest, elapsed)
		if !first {
			break
		}
		p.slowest = p.slowest * 199 / 200
		p.longest = p.longest * 199 / 200
		if p.estimate > p.slowest*3/2 {
			p.estimate = max(p.estimate*49/50, p.slowest*5/4, p.cfg.Floor)
		} else {
			p.estimate = max(p.estimate*199/200, p.cfg.Floor)
		}
	default:
		p.streak++
		grow := elapsed * 5 / 4
		if p.streak > 1 && p.gap == 0 && len(p.votes) == 0 {
			// (Not while jobs are seen completing one after another:
			// their time from submission grows with the queue, not with
			// their run time; and no further than a quarter above the
			// longest a job lately took: jobs are not far longer.)
			grow = elapsed * 2
			if p.longest > elapsed {
				grow = max(min(grow, p.longest*5/4), elapsed*5/4)
			}
		}
		p.slowest = max(p.slowest, elapsed)
		before := p.estimate
		p.estimate = min(max(p.estimate, grow, elapsed+p.cfg.Floor), p.cfg.Timeout)
		raised = p.estimate > before
	}
	l := p.learnt()
	p.mu.Unlock()
	if p.cfg.OnEstimate != nil {
		p.cfg.OnEstimate(l.Estimate)
	}
	if raised {
		p.share(l)
	}
}
