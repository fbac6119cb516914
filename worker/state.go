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
		out = append(out, f.status.State())
	}
	return out
}

// SetAdminAddr makes the replica's heartbeat say where its admin server
// listens (empty: it has none). Safe for concurrent use.
func (w *Worker) SetAdminAddr(addr string) {
	w.budget.SetAdmin(addr)
}

// credentialsRejected reports whether err is Kustomer refusing the API key
// or its permissions.
func credentialsRejected(err error) bool {
	var ke *kustomer.Error
	return errors.As(err, &ke) && (ke.StatusCode == http.StatusUnauthorized || ke.StatusCode == http.StatusForbidden)
}

// storePaused pauses the workflow because an outcome cannot be stored:
// nothing more is fetched until storeResumed.
func (f *flow) storePaused(reason string, at time.Time) {
	f.status.StorePaused(reason, at)
	f.setRunning(false)
	f.onStorePause(true)
}

// storeResumed ends a pause of storePaused, and reports whether there was
// one. Fetching resumes unless Kustomer's breaker is open.
func (f *flow) storeResumed(at time.Time) bool {
	if !f.status.StoreResumed(at) {
		return false
	}
	f.setRunning(!f.breaker.Open())
	f.onStorePause(false)
	return true
}
