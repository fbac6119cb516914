package worker

import (
	"errors"
	"net/http"
	"time"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// Workflows returns the state of each workflow, in config order; nil before
// Start. Safe for concurrent use.
func (w *Worker) Workflows() []replica.WorkflowState {
	flows := w.running.Load()
	if flows == nil {
		return nil
	}
	out := make([]replica.WorkflowState, 0, len(*flows))
	for _, f := range *flows {
		out = append(out, f.state())
	}
	return out
}

// SetAdminAddr makes the replica's heartbeat say where its admin server
// listens (empty: it has none). Safe for concurrent use.
func (w *Worker) SetAdminAddr(addr string) {
	w.budget.SetAdmin(addr)
}

func (f *flow) setState(paused bool, reason string, cause error, at time.Time) {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	f.paused, f.since = paused, at
	f.reason, f.credentials = "", false
	if paused {
		f.reason, f.credentials = reason, credentialsRejected(cause)
	}
}

// credentialsRejected reports whether err is Kustomer refusing the API key
// or its permissions.
func credentialsRejected(err error) bool {
	var ke *kustomer.Error
	return errors.As(err, &ke) && (ke.StatusCode == http.StatusUnauthorized || ke.StatusCode == http.StatusForbidden)
}

func (f *flow) state() replica.WorkflowState {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	st := replica.WorkflowState{Workflow: f.wf.Name, Consumer: f.consumerName, State: replica.StateRunning, Since: f.since.UTC(), Subject: f.wf.Subject}
	if f.paused {
		st.State, st.Reason, st.CredentialsRejected = replica.StatePaused, f.reason, f.credentials
	}
	if f.storeReason != "" {
		st.State, st.Reason, st.StoreFailed = replica.StatePaused, f.storeReason, true
	}
	return st
}

// storePaused pauses the workflow because an outcome cannot be stored:
// nothing more is fetched until storeResumed.
func (f *flow) storePaused(reason string, at time.Time) {
	f.stateMu.Lock()
	if f.storeReason == "" {
		f.since = at
	}
	f.storeReason = reason
	f.stateMu.Unlock()
	f.setRunning(false)
	f.onStorePause(true)
}

// storeResumed ends a pause of storePaused, and reports whether there was
// one. Fetching resumes unless Kustomer's breaker is open.
func (f *flow) storeResumed(at time.Time) bool {
	f.stateMu.Lock()
	was := f.storeReason != ""
	if was {
		f.storeReason, f.since = "", at
	}
	f.stateMu.Unlock()
	if was {
		f.setRunning(!f.breaker.Open())
		f.onStorePause(false)
	}
	return was
}

// storeHeld reports whether the workflow is paused by storePaused.
func (f *flow) storeHeld() bool {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	return f.storeReason != ""
}
