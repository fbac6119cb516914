package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

// Workflow states, as [WorkflowState.State] reports them.
const (
	StateRunning = "running"
	StatePaused  = "paused"
)

// WorkflowState is what a replica knows of one of its workflows: whether it
// consumes or is paused on a systemic Kustomer failure, why, and since when.
// Replicas publish it in their heartbeat, so `kustomer-sync status` can show
// it from another process.
type WorkflowState struct {
	Workflow string    `json:"workflow"`
	Consumer string    `json:"consumer"`
	State    string    `json:"state"`            // StateRunning or StatePaused
	Reason   string    `json:"reason,omitempty"` // why it paused
	Since    time.Time `json:"since"`            // when it started, paused or resumed
	// Subject is the workflow's subject filter: a stream kustomer-sync
	// manages keeps capturing it while a live replica runs the workflow.
	Subject string `json:"subject,omitempty"`
	// CredentialsRejected is set while the workflow is paused because
	// Kustomer refused the API key (401) or its role (403), at the start
	// probe or mid-run: a deployment that waits for an operator, not for
	// Kustomer to recover.
	CredentialsRejected bool `json:"credentials_rejected,omitempty"`
	// StoreFailed is set while the workflow is paused because an outcome
	// cannot be stored (a dead letter, a result, a run record: a stream or
	// bucket that is full or cannot be recreated), not because of Kustomer.
	StoreFailed bool `json:"store_failed,omitempty"`
}

// Workflows returns the state of each workflow, in config order; nil before
// Start. Safe for concurrent use.
func (w *Worker) Workflows() []WorkflowState {
	flows := w.running.Load()
	if flows == nil {
		return nil
	}
	out := make([]WorkflowState, 0, len(*flows))
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

func (f *flow) state() WorkflowState {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	st := WorkflowState{Workflow: f.wf.Name, Consumer: f.consumerName, State: StateRunning, Since: f.since.UTC(), Subject: f.wf.Subject}
	if f.paused {
		st.State, st.Reason, st.CredentialsRejected = StatePaused, f.reason, f.credentials
	}
	if f.storeReason != "" {
		st.State, st.Reason, st.StoreFailed = StatePaused, f.storeReason, true
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

// ReplicaState is a live replica's heartbeat in the replicas bucket
// ([BudgetBucketDefault]): the deployment's budget, the rate this replica may
// spend now, and the state of its workflows. A replica writes it every
// [BudgetTTLDefault]/3 and at once when a workflow pauses or resumes.
type ReplicaState struct {
	Replica       string          `json:"replica"`
	PerMinute     int             `json:"per_minute"`      // the budget of the whole deployment
	RatePerMinute float64         `json:"rate_per_minute"` // the rate in force: this replica's share, less pacing
	At            time.Time       `json:"at"`              // when it was written
	Workflows     []WorkflowState `json:"workflows,omitempty"`
	// Admin is the address its admin server listens on; empty when it has
	// none (--admin-addr off, or the default address was taken by another
	// replica on the same host).
	Admin string `json:"admin,omitempty"`
}

// ReadReplicas returns the live replicas' states from the replicas bucket
// (default [BudgetBucketDefault]), sorted by replica; none if the bucket does
// not exist. A value it cannot read is skipped.
func ReadReplicas(ctx context.Context, js jetstream.JetStream, bucket string) ([]ReplicaState, error) {
	bucket = cmp.Or(bucket, BudgetBucketDefault)
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("worker: replicas bucket %s: %w", bucket, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker: replicas bucket %s: %w", bucket, err)
	}
	defer func() { _ = keys.Stop() }()
	var out []ReplicaState
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or left since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("worker: replicas bucket %s: key %s: %w", bucket, key, err)
		}
		var rs ReplicaState
		if json.Unmarshal(e.Value(), &rs) != nil {
			continue
		}
		rs.Replica = key
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b ReplicaState) int { return cmp.Compare(a.Replica, b.Replica) })
	return out, nil
}
