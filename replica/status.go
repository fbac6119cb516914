package replica

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// StateStopped is the state of a workflow that has a consumer or dead
// letters but no live replica running it.
const StateStopped = "stopped"

// Status is the deployment as the replicas report it: what `kustomer-sync
// status --json` prints and the admin server's /status serves.
type Status struct {
	At          time.Time        `json:"at"`
	Replicas    []State          `json:"replicas"`
	Workflows   []WorkflowStatus `json:"workflows"`
	DeadLetters int              `json:"dead_letters"` // entries in the dead-letter stream
}

// WorkflowStatus is one workflow across the deployment.
type WorkflowStatus struct {
	Workflow       string     `json:"workflow"`
	State          string     `json:"state"`            // running, paused, or stopped (no live replica)
	Reason         string     `json:"reason,omitempty"` // why it paused
	Since          *time.Time `json:"since,omitempty"`  // when it started, paused or resumed
	Replicas       int        `json:"replicas"`         // live replicas running it
	PausedReplicas int        `json:"paused_replicas"`  // of which paused
	RatePerMinute  float64    `json:"rate_per_minute"`  // the rate in force of those replicas, summed
	// CredentialsRejected: a replica is paused because Kustomer rejected its
	// API key or role.
	CredentialsRejected bool `json:"credentials_rejected,omitempty"`

	Consumer    string `json:"consumer,omitempty"`
	Pending     uint64 `json:"pending"`     // events not yet delivered
	AckPending  int    `json:"ack_pending"` // delivered, not yet acknowledged
	Redelivered int    `json:"redelivered"` // delivered more than once, not yet acknowledged
	// Skipped counts the events the stream held on the workflow's subject
	// when its consumer was created that its start (new, or a time) skipped.
	Skipped uint64 `json:"skipped,omitempty"`

	DeadLetters map[outcome.Outcome]int `json:"dead_letters"` // entries by class
}

// StatusConfig names what [CollectStatus] reads and how it knows a
// workflow's consumer; the worker fills it (leads.CollectStatus).
type StatusConfig struct {
	Stream           string // the leads stream; required
	DeadLetterStream string // default dlq.StreamDefault
	ReplicasBucket   string // default BucketDefault
	// Workflow names the workflow a consumer of Stream runs; false for a
	// consumer that is no workflow's.
	Workflow func(*jetstream.ConsumerInfo) (string, bool)
	// Skipped is how many events the stream held on the workflow's subject
	// when its consumer was created that its start skipped.
	Skipped func(*jetstream.ConsumerInfo) uint64
}

// CollectStatus reads the replicas' states, the workflows' consumers and the
// dead letters. It costs a few JetStream requests plus one scan of the
// dead-letter stream.
func CollectStatus(ctx context.Context, js jetstream.JetStream, cfg StatusConfig) (Status, error) {
	stream := cfg.Stream
	rep := Status{At: time.Now().UTC(), Replicas: []State{}}
	replicas, err := Read(ctx, js, cfg.ReplicasBucket)
	if err != nil {
		return rep, fmt.Errorf("replica: status: %w", err)
	}
	rep.Replicas = append(rep.Replicas, replicas...)

	byName := map[string]*WorkflowStatus{}
	get := func(name string) *WorkflowStatus {
		ws := byName[name]
		if ws == nil {
			ws = &WorkflowStatus{Workflow: name, State: StateStopped, DeadLetters: map[outcome.Outcome]int{}}
			byName[name] = ws
		}
		return ws
	}
	consumerOf := map[string]string{} // consumer → workflow
	for _, r := range replicas {
		for _, s := range r.Workflows {
			ws := get(s.Workflow)
			ws.Consumer = cmp.Or(ws.Consumer, s.Consumer)
			consumerOf[s.Consumer] = s.Workflow
			ws.Replicas++
			ws.RatePerMinute += r.RatePerMinute
			ws.CredentialsRejected = ws.CredentialsRejected || s.CredentialsRejected
			since := s.Since
			switch {
			case s.State == StatePaused && ws.PausedReplicas == 0:
				ws.State, ws.Reason, ws.Since = StatePaused, s.Reason, &since
				ws.PausedReplicas++
			case s.State == StatePaused:
				ws.PausedReplicas++
				if since.Before(*ws.Since) {
					ws.Since = &since
				}
			case ws.State == StateStopped:
				ws.State, ws.Since = StateRunning, &since
			case ws.State == StateRunning && since.Before(*ws.Since):
				ws.Since = &since
			}
		}
	}

	st, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if len(replicas) == 0 {
			return rep, fmt.Errorf("replica: status: stream %s does not exist and no replica is live: start one with 'kustomer-sync run' (or pass --stream)", stream)
		}
	case err != nil:
		return rep, fmt.Errorf("replica: status: stream %s: %w", stream, err)
	default:
		list := st.ListConsumers(ctx)
		for info := range list.Info() {
			name, ok := consumerOf[info.Name]
			if !ok {
				if name, ok = cfg.Workflow(info); !ok {
					continue // not a kustomer-sync workflow's consumer
				}
			}
			ws := get(name)
			ws.Consumer = info.Name
			ws.Pending, ws.AckPending, ws.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
			ws.Skipped = cfg.Skipped(info)
		}
		if err := list.Err(); err != nil {
			return rep, fmt.Errorf("replica: status: consumers of %s: %w", stream, err)
		}
	}

	store, err := dlq.OpenStore(ctx, js, cfg.DeadLetterStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// No worker has started yet: no dead letters.
	case err != nil:
		return rep, fmt.Errorf("replica: status: %w", err)
	default:
		stats, err := store.Stats(ctx, dlq.Filter{})
		if err != nil {
			return rep, fmt.Errorf("replica: status: %w", err)
		}
		for name, byClass := range stats {
			ws := get(name)
			for class, n := range byClass {
				ws.DeadLetters[class] += n
				rep.DeadLetters += n
			}
		}
	}

	rep.Workflows = make([]WorkflowStatus, 0, len(byName))
	for _, ws := range byName {
		rep.Workflows = append(rep.Workflows, *ws)
	}
	slices.SortFunc(rep.Workflows, func(a, b WorkflowStatus) int { return cmp.Compare(a.Workflow, b.Workflow) })
	return rep, nil
}
