// Package bulkpace decides when to poll Kustomer's bulk jobs: as seldom as
// it can (each poll costs a rate unit, like the submission), and not much
// later than the job completes (the items it holds wait meanwhile). It
// learns how long jobs take from the answers to its polls, and whether
// Kustomer runs them side by side or one after another.
//
// It does no I/O and reads no clock: the caller passes the time in, asks
// [Pacer.Next] when a job is due, polls it, and tells [Pacer.Polled] what it
// found. That makes its decisions testable against synthetic job timelines
// (see the simulation in its tests).
package bulkpace

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// InitialDefault is how long a job is expected to take before any
	// has been seen to finish.
	InitialDefault = 2 * time.Second
	// FloorDefault bounds the learnt estimate from below.
	FloorDefault = 50 * time.Millisecond
	// TimeoutDefault bounds the estimate from above when Config.Timeout is
	// zero.
	TimeoutDefault = 30 * time.Minute
	// gapVotes is how many jobs in a row must have completed well after
	// the one before them for the pacer to take Kustomer as running its
	// jobs one after another.
	gapVotes = 3
	// gapProbe: one job in gapProbe is polled at its own time while a gap
	// is in force, to find out whether it still is.
	gapProbe = 32
	// OrderWait bounds how long a due job waits for the answer to the job
	// sent before it (which says whether this one can be done yet): a slow
	// round trip (a busy budget, a loaded host), not a stall when answers
	// do not come. Shorter, two jobs due together are both polled while
	// the first answer is on its way, and both found running.
	OrderWait = 2 * FloorDefault
)

// Config configures a [Pacer]; the zero value takes the defaults.
type Config struct {
	// Initial is the estimate before any job was seen to finish; default
	// InitialDefault.
	Initial time.Duration
	// Floor bounds the estimate from below; default FloorDefault.
	Floor time.Duration
	// Timeout is the longest a job is followed (the workflow's
	// bulk_job_timeout): the estimate never exceeds it. Default
	// TimeoutDefault.
	Timeout time.Duration
	// OnEstimate, when set, is told every new estimate (a metric).
	OnEstimate func(time.Duration)
	// OnLearn, when set, is told what the pacer learnt when a job found
	// running raised the estimate, or jobs were seen to run one after
	// another: for the deployment's other replicas ([Pacer.Adopt]). It is
	// called without the pacer's lock held.
	OnLearn func(Learnt)
	// Sends, when set, counts the bulk requests the whole deployment sent
	// (every replica, every workflow: Kustomer's queue is the org's), so
	// that in a queue run one job after another a job is expected a run
	// time later for each job sent between it and the one before it.
	Sends Sends
}

// Sends counts the bulk requests sent in a span of time.
type Sends interface {
	// Between is how many were sent after a and before b.
	Between(a, b time.Time) int
}

// Learnt is what one replica's pacer learnt of the jobs' durations that
// the others adopt: how long a job is expected to take, the longest one
// was lately found running, and, when Kustomer runs the org's jobs one
// after another, each job's step in that queue (Gap) and the shortest time
// a job took from submission to completion.
type Learnt struct {
	Estimate, Slowest, Gap, Shortest time.Duration
}

// MarshalText encodes l as four counts of milliseconds: "<estimate>
// <slowest> <gap> <shortest>".
func (l Learnt) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%d %d %d %d", l.Estimate.Milliseconds(), l.Slowest.Milliseconds(), l.Gap.Milliseconds(), l.Shortest.Milliseconds()), nil
}

// UnmarshalText decodes what MarshalText encodes.
func (l *Learnt) UnmarshalText(b []byte) error {
	f := strings.Fields(string(b))
	var ms [4]int64
	if len(f) != len(ms) {
		return fmt.Errorf("bulkpace: learnt durations %q: want four counts of milliseconds", b)
	}
	for i := range f {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bulkpace: learnt durations %q: want four counts of milliseconds", b)
		}
		ms[i] = n
	}
	l.Estimate, l.Slowest = time.Duration(ms[0])*time.Millisecond, time.Duration(ms[1])*time.Millisecond
	l.Gap, l.Shortest = time.Duration(ms[2])*time.Millisecond, time.Duration(ms[3])*time.Millisecond
	return nil
}

// Adopt takes what another replica learnt (or the deployment did before
// this replica started): an estimate above this pacer's raises it, as a
// job found running here would have; a lower one is ignored (each pacer
// lowers its own as it finds jobs complete).
func (p *Pacer) Adopt(l Learnt) {
	p.mu.Lock()
	if l.Shortest > 0 && (p.shortest == 0 || l.Shortest < p.shortest) {
		p.shortest = l.Shortest
	}
	if l.Gap > 0 && p.gap == 0 {
		p.gap, p.votes = min(l.Gap, p.cfg.Timeout), nil
	}
	if l.Estimate <= p.estimate {
		p.mu.Unlock()
		return
	}
	p.estimate = min(l.Estimate, p.cfg.Timeout)
	p.slowest = max(p.slowest, min(l.Slowest, p.estimate))
	p.streak++
	est := p.estimate
	p.mu.Unlock()
	if p.cfg.OnEstimate != nil {
		p.cfg.OnEstimate(est)
	}
}

// learnt is what p learnt. The caller holds p.mu.
func (p *Pacer) learnt() Learnt {
	return Learnt{Estimate: p.estimate, Slowest: p.slowest, Gap: p.gap, Shortest: p.shortest}
}

// share tells OnLearn what p learnt.
func (p *Pacer) share(l Learnt) {
	if p.cfg.OnLearn != nil {
		p.cfg.OnLearn(l)
	}
}

// Pacer learns how long the jobs of one bulk workflow take and times their
// polls. It is safe for concurrent use: each job is followed by its own
// goroutine.
type Pacer struct {
	cfg Config

	mu       sync.Mutex
	estimate time.Duration // how long a job takes, learnt from polls
	// slowest is the longest a job was lately seen still running; it
	// fades as jobs are found complete at their first poll.
	slowest time.Duration
	// longest is the longest from submission a job was lately found
	// complete in (a bound on how long they take); it fades as slowest
	// does.
	longest time.Duration
	// gap is how long after the job sent before it a job is expected to
	// complete, for each job the deployment sent from that one to this
	// one (Config.Sends): 0 while jobs run side by side; about a job's run
	// time when Kustomer runs them one after another (its queue then
	// grows with the jobs in flight, and so does a job's time from
	// submission, which the estimate cannot follow). It is set once
	// gapVotes jobs in a row, each in flight when the one before it
	// completed and polled at their own time, completed at least half the
	// shortest job's time after it (beyond the time between their
	// submissions), to the least of those delays (at most the shortest
	// job's time), or when another replica shares it; then it shrinks by
	// 1 % for a job found complete at a poll it timed, grows by a quarter
	// for one found still running, and is dropped when one job in
	// gapProbe, polled at its own time, is found complete, or a job is
	// found running after one sent later was found complete.
	gap    time.Duration
	votes  []time.Duration
	probes int
	// shortest is the least time from submission a job was found
	// complete in: about a job's run time when none waits for another.
	shortest time.Duration
	// doneSent is the latest submission of a job found complete.
	doneSent time.Time
	// dropped is closed (and replaced) when the gap is dropped: the jobs
	// it held wake to be polled sooner.
	dropped chan struct{}
	// streak counts the polls in a row that found a job running.
	streak int
	last   *Job // the job started last in order
}

// New returns a pacer for cfg.
func New(cfg Config) *Pacer {
	cfg.Initial = cmp.Or(cfg.Initial, InitialDefault)
	cfg.Floor = cmp.Or(cfg.Floor, FloorDefault)
	cfg.Timeout = cmp.Or(cfg.Timeout, TimeoutDefault)
	return &Pacer{cfg: cfg, estimate: cfg.Initial, dropped: make(chan struct{})}
}

// Job is one bulk job a pacer times. Its methods are for the one goroutine
// that follows it; other jobs read its state under its lock.
type Job struct {
	sent   time.Time // when it was submitted (or, unknown, first followed)
	known  bool      // sent is the submission's time
	polls  int
	wait   time.Duration // past the estimate: after an early poll
	held   bool          // this poll was put off for the job sent before it
	behind bool          // this poll is a run time after the job before it
	probed bool
	probe  bool // polled at its own time, gap or not

	mu sync.Mutex
	// prev is the job started before this one (nil for a job not started
	// in order), dropped once this one ends: in Kustomer's queue this job
	// may wait for it.
	prev  *Job
	due   time.Time // its next poll
	end   time.Time // when it was found complete (or ended otherwise)
	chain bool      // due was set by the gap after prev
	// misses counts its polls that found it running; changed is closed
	// (and replaced) when its next poll is set or it ended.
	misses  int
	changed chan struct{}
}

// Start begins timing a job submitted at sent (zero: unknown, from now).
// inOrder says this pacer saw it submitted, after the job started before
// it in order: in a queue Kustomer runs one job after another, it waits
// for that one.
func (p *Pacer) Start(sent, now time.Time, inOrder bool) *Job {
	j := &Job{sent: cmp.Or(sent, now), known: !sent.IsZero(), changed: make(chan struct{})}
	if inOrder {
		p.mu.Lock()
		j.prev, p.last = p.last, j
		p.mu.Unlock()
	}
	return j
}

// Dropped is closed when the pacer stops taking Kustomer as running jobs
// one after another: a job waiting for its next poll asks [Pacer.Next]
// again then. Take it before calling Next.
func (p *Pacer) Dropped() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// dropGap drops the gap. The caller holds p.mu.
func (p *Pacer) dropGap() {
	if p.gap > 0 {
		close(p.dropped)
		p.dropped = make(chan struct{})
	}
	p.gap, p.votes = 0, nil
}

// Next says what j waits for at now: its next poll, due; or, when prev is
// not nil, the answer to the poll of the job started before it, which
// says whether this one can be complete yet: the caller waits for prev to
// be closed, OrderWait at most, then asks again.
func (p *Pacer) Next(j *Job, now time.Time) (due time.Time, prev <-chan struct{}) {
	due = j.sent.Add(max(p.Expected(), j.wait))
	cd, gap, prevCh, ok := p.chainDue(j)
	if gap > 0 && j.polls == 0 && !j.probed {
		// Every gapProbe-th job is polled at its own time, however the
		// gap says: found complete, the queue is not serial (any more).
		j.probed, j.probe = true, p.probeDue()
	}
	if j.probe {
		ok, prevCh = false, nil
	}
	if !ok && prevCh != nil && cd.After(due) {
		prevCh = nil // it is polled later than this one
	}
	chain := ok && cd.After(due)
	if chain {
		due = cd
		j.held = true
	}
	chain = chain && gap > 0 // found running then: the gap was short
	j.mu.Lock()
	if !due.Equal(j.due) {
		j.notify()
	}
	j.due, j.chain = due, chain
	j.mu.Unlock()
	if prevCh != nil && !now.Before(due) && !now.Before(cd) {
		// The job started before it is being polled now: its answer says
		// whether this one can be done yet.
		j.held = true
		return due, prevCh
	}
	return due, nil
}

// Retry puts j's next poll delay after now: its poll failed, or could not
// be made.
func (p *Pacer) Retry(j *Job, now time.Time, delay time.Duration) {
	j.wait = now.Sub(j.sent) + delay
}

// Polled learns from a poll of j answered at now: complete, or still
// running.
func (p *Pacer) Polled(j *Job, now time.Time, complete bool) {
	j.polls++
	elapsed := now.Sub(j.sent)
	j.mu.Lock()
	chained := j.chain
	j.mu.Unlock()
	if complete {
		p.completed(j)
		p.learn(elapsed, true, j.polls == 1)
		switch {
		case j.probe && j.polls == 1:
			p.notSerial()
		case !j.held:
			p.learnGap(j, now, true, chained)
		case chained:
			p.learnGap(j, now, true, true)
		}
		return
	}
	j.mu.Lock()
	j.misses++
	j.mu.Unlock()
	j.held = false
	p.running(j, j.behind)
	j.behind = false
	if chained {
		// Still running at the gap after the job before it: asked again a
		// quarter of the (raised) gap later.
		gap := p.learnGap(j, now, false, true)
		j.wait = elapsed + max(gap/4, p.cfg.Floor)
		return
	}
	// Not done: asked again later, never at once.
	p.learn(elapsed, false, j.polls == 1)
	j.wait = max(elapsed*5/4, elapsed+p.cfg.Floor)
	if ref := j.prevRef(); ref.After(j.sent) {
		// The job before it was in flight alongside: this one may be
		// queued behind it, for a job's run time after it completes (when
		// it was found complete, or its next poll).
		if w := ref.Add(p.shortestRun()).Sub(j.sent); w > j.wait {
			j.wait, j.behind = w, true
		}
	}
}

// Ended records that j ended at now (complete, failed or no longer
// followed) and wakes the job started after it.
func (p *Pacer) Ended(j *Job, now time.Time) {
	j.mu.Lock()
	j.end, j.prev = now, nil
	j.notify()
	j.mu.Unlock()
	p.mu.Lock()
	if p.last == j {
		p.last = nil
	}
	p.mu.Unlock()
}

// notify wakes the job started after this one. The caller holds j.mu.
func (j *Job) notify() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// prevRef is when the job started before this one ended or, while it
// runs, its next poll; zero without one.
func (j *Job) prevRef() time.Time {
	j.mu.Lock()
	p := j.prev
	j.mu.Unlock()
	if p == nil {
		return time.Time{}
	}
	due, end := p.state()
	return cmp.Or(end, due)
}

// state is the job's next poll and, once it ended, when.
func (j *Job) state() (due, end time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.due, j.end
}

// prevJob is the job started before this one, while this one runs.
func (j *Job) prevJob() *Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.prev
}

// prevEnd is when the job started before this one ended (zero while it
// runs, or without one), and when it was sent.
func (j *Job) prevEnd() (end, sent time.Time) {
	j.mu.Lock()
	p := j.prev
	j.mu.Unlock()
	if p == nil {
		return time.Time{}, time.Time{}
	}
	_, end = p.state()
	return end, p.sent
}
