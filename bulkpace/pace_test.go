package bulkpace

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// A job found running raises the estimate by a quarter; found running
// again at once (jobs far longer than the estimate), the estimate doubles
// at each poll, so that a 5-minute job is learnt in about eight polls, not
// twenty-three.
func TestJobsFoundRunningInARowDoubleTheEstimate(t *testing.T) {
	p := New(Config{})
	j := p.Start(t0, t0, true)
	var polls int
	for now := t0; ; {
		due, prev := p.Next(j, now)
		require.Nil(t, prev)
		now = due
		polls++
		done := now.Sub(t0) >= 5*time.Minute
		p.Polled(j, now, done)
		if done {
			break
		}
	}
	require.LessOrEqual(t, polls, 9)
	require.Greater(t, p.Expected(), 5*time.Minute)
	require.LessOrEqual(t, p.Expected(), 10*time.Minute, "at most twice the job's duration")
}

// An estimate overshot while learning comes down faster than one learnt
// at its job's pace, but not below a quarter above the longest a job was
// seen running.
func TestAnOvershotEstimateComesDownToAQuarterAboveTheSlowestJobSeen(t *testing.T) {
	p := New(Config{})
	j := p.Start(t0, t0, true)
	p.Polled(j, t0.Add(20*time.Second), false) // est 25 s
	p.Polled(j, t0.Add(25*time.Second), false) // in a row: est 50 s
	require.Equal(t, 50*time.Second, p.Expected())
	p.Polled(j, t0.Add(50*time.Second), true)
	for range 40 {
		k := p.Start(t0, t0, false)
		p.Polled(k, t0.Add(p.Expected()), true)
	}
	require.Less(t, p.Expected(), 35*time.Second, "2 % a job while far above what was seen running")
	require.GreaterOrEqual(t, p.Expected(), 25*time.Second*199/200*5/4-time.Second)
}

// What one replica learnt raises another's estimate (a job of the
// deployment found running), never lowers it; it travels as text.
func TestAReplicaAdoptsTheDeploymentsLongerEstimate(t *testing.T) {
	var shared []Learnt
	a := New(Config{OnLearn: func(l Learnt) { shared = append(shared, l) }})
	b := New(Config{})
	j := a.Start(t0, t0, true)
	a.Polled(j, t0.Add(40*time.Second), false)
	require.Len(t, shared, 1)
	text, err := shared[0].MarshalText()
	require.NoError(t, err)
	require.Equal(t, "50000 40000 0 0", string(text))
	var l Learnt
	require.NoError(t, l.UnmarshalText(text))
	b.Adopt(l)
	require.Equal(t, 50*time.Second, b.Expected())
	b.Adopt(Learnt{Estimate: time.Second})
	require.Equal(t, 50*time.Second, b.Expected(), "a shorter estimate is not adopted")

	require.ErrorContains(t, l.UnmarshalText([]byte("soon")), "bulkpace: learnt durations")
	require.Error(t, l.UnmarshalText([]byte("-5 3")))
}

// In a queue run one job after another, shared by several replicas, a
// job is expected a run time after the one this replica sent before it
// for every job the deployment sent in between.
func TestInASharedSerialQueueAJobWaitsARunTimeForEachJobSentBetween(t *testing.T) {
	sends := &simSends{}
	p := New(Config{Sends: sends})
	p.gap = 2 * time.Second
	a := p.Start(t0, t0, true)
	sends.add(t0)
	for i := range 3 { // another replica's
		sends.add(t0.Add(time.Duration(i+1) * 100 * time.Millisecond))
	}
	b := p.Start(t0.Add(time.Second), t0.Add(time.Second), true)
	sends.add(t0.Add(time.Second))
	p.Polled(a, t0.Add(2*time.Second), true)
	p.Ended(a, t0.Add(2*time.Second))
	due, prev := p.Next(b, t0.Add(2*time.Second))
	require.Nil(t, prev)
	require.Equal(t, t0.Add(2*time.Second+4*2*time.Second), due, "b runs after the 3 jobs sent between and itself")
}
