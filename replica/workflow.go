package replica

import (
	"sync"
	"time"
)

// WorkflowTracker keeps what a replica knows of one workflow it runs, as its
// heartbeat publishes it ([WorkflowTracker.State]): running, paused on a
// systemic Kustomer failure, or paused because an outcome cannot be
// stored, and since when. Both pauses may hold at once; the store's is the
// one shown. Safe for concurrent use.
type WorkflowTracker struct {
	workflow, consumer, subject string

	mu     sync.Mutex
	paused bool
	reason string    // why it paused; empty while running
	since  time.Time // when it last started, paused or resumed
	// credentials: paused because Kustomer rejected the API key or role.
	credentials bool
	// storeReason says why the workflow is paused because an outcome
	// cannot be stored; empty otherwise.
	storeReason string
}

// NewWorkflowTracker returns the tracker of workflow, consumed by consumer
// on subject, running since at.
func NewWorkflowTracker(workflow, consumer, subject string, at time.Time) *WorkflowTracker {
	return &WorkflowTracker{workflow: workflow, consumer: consumer, subject: subject, since: at}
}

// SetPaused records that the workflow paused on Kustomer, for reason
// (credentials: Kustomer rejected the API key or its role), or resumed.
func (s *WorkflowTracker) SetPaused(paused bool, reason string, credentials bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused, s.since = paused, at
	s.reason, s.credentials = "", false
	if paused {
		s.reason, s.credentials = reason, credentials
	}
}

// StorePaused records that the workflow paused because an outcome cannot
// be stored, for reason; since is kept while such a pause goes on.
func (s *WorkflowTracker) StorePaused(reason string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.storeReason == "" {
		s.since = at
	}
	s.storeReason = reason
}

// StoreResumed ends a pause of StorePaused, and reports whether there was
// one.
func (s *WorkflowTracker) StoreResumed(at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.storeReason != ""
	if was {
		s.storeReason, s.since = "", at
	}
	return was
}

// StoreHeld reports whether the workflow is paused by StorePaused.
func (s *WorkflowTracker) StoreHeld() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.storeReason != ""
}

// State is the workflow's state now, as the heartbeat carries it.
func (s *WorkflowTracker) State() WorkflowState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := WorkflowState{Workflow: s.workflow, Consumer: s.consumer, State: StateRunning, Since: s.since.UTC(), Subject: s.subject}
	if s.paused {
		st.State, st.Reason, st.CredentialsRejected = StatePaused, s.reason, s.credentials
	}
	if s.storeReason != "" {
		st.State, st.Reason, st.StoreFailed = StatePaused, s.storeReason, true
	}
	return st
}
