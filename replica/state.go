package replica

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// State is a live replica's heartbeat in the replicas bucket
// ([BucketDefault]): the deployment's budget, the rate this replica may
// spend now, and the state of its workflows. A replica writes it every
// [TTLDefault]/3 and at once when a workflow pauses or resumes.
type State struct {
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

// Read returns the live replicas' states from the replicas bucket
// (default [BucketDefault]), sorted by replica; none if the bucket does
// not exist. A value it cannot read is skipped.
func Read(ctx context.Context, js jetstream.JetStream, bucket string) ([]State, error) {
	bucket = cmp.Or(bucket, BucketDefault)
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("replica: replicas bucket %s: %w", bucket, err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica: replicas bucket %s: %w", bucket, err)
	}
	defer func() { _ = keys.Stop() }()
	var out []State
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or left since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("replica: replicas bucket %s: key %s: %w", bucket, key, err)
		}
		var rs State
		if json.Unmarshal(e.Value(), &rs) != nil {
			continue
		}
		rs.Replica = key
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b State) int { return cmp.Compare(a.Replica, b.Replica) })
	return out, nil
}
