package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

func init() {
	extraCommands = append(extraCommands, func(a *app) *cobra.Command { return a.statusCommand() })
}

// stateStopped is the state of a workflow that has a consumer or dead
// letters but no live replica running it.
const stateStopped = "stopped"

// statusReport is the deployment as `status --json` prints it.
type statusReport struct {
	At          time.Time             `json:"at"`
	Replicas    []worker.ReplicaState `json:"replicas"`
	Workflows   []workflowStatus      `json:"workflows"`
	DeadLetters int                   `json:"dead_letters"` // entries in the dead-letter stream
}

// workflowStatus is one workflow across the deployment.
type workflowStatus struct {
	Workflow       string     `json:"workflow"`
	State          string     `json:"state"`            // running, paused, or stopped (no live replica)
	Reason         string     `json:"reason,omitempty"` // why it paused
	Since          *time.Time `json:"since,omitempty"`  // when it started, paused or resumed
	Replicas       int        `json:"replicas"`         // live replicas running it
	PausedReplicas int        `json:"paused_replicas"`  // of which paused
	RatePerMinute  float64    `json:"rate_per_minute"`  // the rate in force of those replicas, summed

	Consumer    string `json:"consumer,omitempty"`
	Pending     uint64 `json:"pending"`     // events not yet delivered
	AckPending  int    `json:"ack_pending"` // delivered, not yet acknowledged
	Redelivered int    `json:"redelivered"` // delivered more than once, not yet acknowledged

	DeadLetters map[outcome.Outcome]int `json:"dead_letters"` // entries by class
}

func (a *app) statusCommand() *cobra.Command {
	var (
		stream, dlqStream, bucket string
		asJSON                    bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each workflow's state, backlog, rate and dead letters",
		Long: `Show the deployment as the workers report it: per workflow its state (running; paused on a
systemic Kustomer failure, why and since when; stopped when no live replica runs it), its
consumer's backlog (pending, ack pending, redelivered), the rate in force and the live replicas
running it, and its dead letters by class.

Workers publish their state in the replicas bucket every two seconds and at once when a workflow
pauses or resumes; a replica that stops leaves it at once, one that dies within six seconds.
The command exits 0 whatever the state: scripts read --json.`,
		Example: `  kustomer-sync status
  kustomer-sync status --json | jq '.workflows[] | select(.state == "paused")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			nc, js, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			rep, err := collectStatus(ctx, js, stream, dlqStream, bucket)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, rep)
			}
			return writeStatus(a.stdout, rep)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&stream, "stream", worker.StreamDefault, "JetStream stream of lead events, whose consumers are the workflows'")
	fl.StringVar(&dlqStream, "dlq-stream", dlq.StreamDefault, "dead-letter stream")
	fl.StringVar(&bucket, "replicas-bucket", worker.BudgetBucketDefault, "KV bucket where replicas publish their state")
	fl.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	bindEnv(fl, "stream", "KSYNC_STREAM") // as `run` reads it
	return cmd
}

// collectStatus reads the replicas' states, the workflows' consumers and the
// dead letters.
func collectStatus(ctx context.Context, js jetstream.JetStream, stream, dlqStream, bucket string) (statusReport, error) {
	rep := statusReport{At: time.Now().UTC(), Replicas: []worker.ReplicaState{}}
	replicas, err := worker.ReadReplicas(ctx, js, bucket)
	if err != nil {
		return rep, fmt.Errorf("status: %w", err)
	}
	rep.Replicas = append(rep.Replicas, replicas...)

	byName := map[string]*workflowStatus{}
	get := func(name string) *workflowStatus {
		ws := byName[name]
		if ws == nil {
			ws = &workflowStatus{Workflow: name, State: stateStopped, DeadLetters: map[outcome.Outcome]int{}}
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
			since := s.Since
			switch {
			case s.State == worker.StatePaused && ws.PausedReplicas == 0:
				ws.State, ws.Reason, ws.Since = worker.StatePaused, s.Reason, &since
				ws.PausedReplicas++
			case s.State == worker.StatePaused:
				ws.PausedReplicas++
				if since.Before(*ws.Since) {
					ws.Since = &since
				}
			case ws.State == stateStopped:
				ws.State, ws.Since = worker.StateRunning, &since
			case ws.State == worker.StateRunning && since.Before(*ws.Since):
				ws.Since = &since
			}
		}
	}

	st, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if len(replicas) == 0 {
			return rep, fmt.Errorf("status: stream %s does not exist and no replica is live: start one with 'kustomer-sync run' (or pass --stream)", stream)
		}
	case err != nil:
		return rep, fmt.Errorf("status: stream %s: %w", stream, err)
	default:
		list := st.ListConsumers(ctx)
		for info := range list.Info() {
			name, ok := consumerOf[info.Name]
			if !ok {
				if name, ok = strings.CutPrefix(info.Name, worker.ConsumerPrefixDefault); !ok {
					continue // not a kustomer-sync workflow's consumer
				}
			}
			ws := get(name)
			ws.Consumer = info.Name
			ws.Pending, ws.AckPending, ws.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
		}
		if err := list.Err(); err != nil {
			return rep, fmt.Errorf("status: consumers of %s: %w", stream, err)
		}
	}

	store, err := dlq.OpenStore(ctx, js, dlqStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// No worker has started yet: no dead letters.
	case err != nil:
		return rep, fmt.Errorf("status: %w", err)
	default:
		stats, err := store.Stats(ctx, dlq.Filter{})
		if err != nil {
			return rep, fmt.Errorf("status: %w", err)
		}
		for name, byClass := range stats {
			ws := get(name)
			for class, n := range byClass {
				ws.DeadLetters[class] += n
				rep.DeadLetters += n
			}
		}
	}

	rep.Workflows = make([]workflowStatus, 0, len(byName))
	for _, ws := range byName {
		rep.Workflows = append(rep.Workflows, *ws)
	}
	slices.SortFunc(rep.Workflows, func(a, b workflowStatus) int { return cmp.Compare(a.Workflow, b.Workflow) })
	return rep, nil
}

func writeStatus(w io.Writer, rep statusReport) error {
	var rate float64
	names := make([]string, len(rep.Replicas))
	for i, r := range rep.Replicas {
		rate += r.RatePerMinute
		names[i] = r.Replica
	}
	switch len(rep.Replicas) {
	case 0:
		fmt.Fprintln(w, "No live replica.")
	default:
		fmt.Fprintf(w, "%d live %s (%s), rate in force %.0f/min of a %d/min budget\n",
			len(rep.Replicas), plural(len(rep.Replicas), "replica", "replicas"), strings.Join(names, ", "), rate, rep.Replicas[0].PerMinute)
	}
	if len(rep.Workflows) == 0 {
		_, err := fmt.Fprintln(w, "No workflows.")
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW\tSTATE\tSINCE\tREPLICAS\tRATE/MIN\tPENDING\tACK PENDING\tREDELIVERED\tDEAD LETTERS")
	for _, ws := range rep.Workflows {
		since := "-"
		if ws.Since != nil {
			since = ws.Since.Local().Format(time.DateTime)
		}
		state := ws.State
		if ws.PausedReplicas > 0 && ws.PausedReplicas < ws.Replicas {
			state = fmt.Sprintf("paused (%d of %d)", ws.PausedReplicas, ws.Replicas)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%d\t%d\t%d\t%s\n", ws.Workflow, state, since, ws.Replicas, ws.RatePerMinute,
			ws.Pending, ws.AckPending, ws.Redelivered, deadLetterCounts(ws.DeadLetters))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ws := range rep.Workflows {
		if ws.State == worker.StatePaused {
			fmt.Fprintf(w, "\n%s is paused: %s\n", ws.Workflow, ws.Reason)
		}
	}
	return nil
}

// deadLetterCounts shows counts by class in outcome.Failures order: "permanent=2 exhausted=1", or "0".
func deadLetterCounts(byClass map[outcome.Outcome]int) string {
	var parts []string
	for _, c := range outcome.Failures {
		if n := byClass[c]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", c, n))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, " ")
}
