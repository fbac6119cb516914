package leads

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// ReplayCheck returns a check for [dlq.ReplayOptions.Check]: an entry may
// be replayed when the stream that captures its subject has its workflow's
// durable consumer (ksync-<workflow>, which the worker creates for each
// configured workflow) with a filter covering the subject, and, while any
// replica is live, when a live replica runs the workflow: a consumer is
// kept when a reload removes or renames its workflow, so it alone does not
// say anyone still reads it. Otherwise the error, wrapping [ErrNoWorkflow],
// names the workflow, the stream and the workflows that do consume the
// subject. An entry without a workflow passes. The consumers of each stream
// and the replicas are read once per check; the check is for one replay
// run, not safe for concurrent use.
func ReplayCheck(js jetstream.JetStream) func(context.Context, dlq.Record) error {
	streams := map[string]string{}                      // subject → stream
	consumers := map[string][]*jetstream.ConsumerInfo{} // stream → its consumers
	var replicas []replica.State
	replicasRead := false
	return func(ctx context.Context, r dlq.Record) error {
		if r.Workflow == "" || r.Subject == "" {
			return nil
		}
		stream, ok := streams[r.Subject]
		if !ok {
			var err error
			stream, err = js.StreamNameBySubject(ctx, r.Subject)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return noWorkflowError(fmt.Sprintf("leads: workflow %q cannot receive %s: no stream captures that subject", r.Workflow, r.Subject))
			}
			if err != nil {
				return fmt.Errorf("leads: find the stream of subject %s: %w", r.Subject, err)
			}
			streams[r.Subject] = stream
		}
		infos, ok := consumers[stream]
		if !ok {
			st, err := js.Stream(ctx, stream)
			if err != nil {
				return fmt.Errorf("leads: stream %s: %w", stream, err)
			}
			list := st.ListConsumers(ctx)
			for info := range list.Info() {
				infos = append(infos, info)
			}
			if err := list.Err(); err != nil {
				return fmt.Errorf("leads: list the consumers of stream %s: %w", stream, err)
			}
			consumers[stream] = infos
		}
		var workflows []string
		for _, info := range infos {
			name, ok := ConsumerWorkflow(info)
			if !ok || !ConsumerCovers(info.Config, r.Subject) {
				continue
			}
			if name == r.Workflow {
				if !replicasRead {
					var err error
					if replicas, err = replica.Read(ctx, js, ""); err != nil {
						return fmt.Errorf("leads: which replicas run workflow %q: %w", r.Workflow, err)
					}
					replicasRead = true
				}
				return liveReplicaRuns(replicas, r, stream)
			}
			workflows = append(workflows, name)
		}
		slices.Sort(workflows)
		now := "none"
		if len(workflows) > 0 {
			now = strings.Join(workflows, ", ")
		}
		return noWorkflowError(fmt.Sprintf("leads: workflow %q no longer reads %s: stream %s has no consumer %s%s for it (workflows reading it now: %s); restore the workflow, or purge the entry",
			r.Workflow, r.Subject, stream, ConsumerPrefixDefault, r.Workflow, now))
	}
}

// liveReplicaRuns checks that a live replica runs r's workflow, when any
// replica is live: a workflow a reload removed or renamed keeps its
// consumer, and an event replayed to it would reach no one who runs it.
// With no replica live, the consumer is all there is to go by: the entry
// waits in the stream for the next start.
func liveReplicaRuns(replicas []replica.State, r dlq.Record, stream string) error {
	if len(replicas) == 0 {
		return nil
	}
	var running []string
	for _, rs := range replicas {
		for _, w := range rs.Workflows {
			if w.Workflow == r.Workflow {
				return nil
			}
			if w.Subject == "" || subject.Covers(w.Subject, r.Subject) {
				running = append(running, w.Workflow)
			}
		}
	}
	slices.Sort(running)
	running = slices.Compact(running)
	now := "none"
	if len(running) > 0 {
		now = strings.Join(running, ", ")
	}
	return noWorkflowError(fmt.Sprintf("leads: workflow %q no longer reads %s: its consumer %s%s on stream %s is kept, but no live replica runs it (workflows the replicas run on it now: %s); restore the workflow, or purge the entry",
		r.Workflow, r.Subject, ConsumerPrefixDefault, r.Workflow, stream, now))
}

// ConsumerCovers reports whether a consumer with cfg receives messages on
// subj.
func ConsumerCovers(cfg jetstream.ConsumerConfig, subj string) bool {
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append(filters, cfg.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	return slices.ContainsFunc(filters, func(f string) bool { return subject.Covers(f, subj) })
}

// ConsumerWorkflow names the workflow a consumer of the leads stream is
// for: the one its metadata names when kustomer-sync made it (whatever its
// name's prefix, Config.ConsumerPrefix), else the name after the default
// prefix. ok is false for a consumer of no workflow.
func ConsumerWorkflow(info *jetstream.ConsumerInfo) (name string, ok bool) {
	if md := info.Config.Metadata; md[ManagedByKey] == ManagedByValue && md[WorkflowKey] != "" {
		return md[WorkflowKey], true
	}
	return strings.CutPrefix(info.Name, ConsumerPrefixDefault)
}
