package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// ErrNoWorkflow means a dead letter's workflow no longer consumes the
// entry's subject, so a replay would reach nobody who runs it.
var ErrNoWorkflow = errors.New("worker: the entry's workflow no longer reads its subject")

// ReplayCheck returns a check for [dlq.ReplayOptions.Check]: an entry may
// be replayed when the stream that captures its subject has its workflow's
// durable consumer (ksync-<workflow>, which the worker creates for each
// configured workflow and keeps while the workflow exists) with a filter
// covering the subject. Otherwise the error, wrapping [ErrNoWorkflow], names
// the workflow, the stream and the workflows that do consume the subject.
// An entry without a workflow passes. The consumers of each stream are read
// once per check; the check is for one replay run, not safe for concurrent
// use.
func ReplayCheck(js jetstream.JetStream) func(context.Context, dlq.Record) error {
	streams := map[string]string{}                      // subject → stream
	consumers := map[string][]*jetstream.ConsumerInfo{} // stream → its consumers
	return func(ctx context.Context, r dlq.Record) error {
		if r.Workflow == "" || r.Subject == "" {
			return nil
		}
		stream, ok := streams[r.Subject]
		if !ok {
			var err error
			stream, err = js.StreamNameBySubject(ctx, r.Subject)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return noWorkflowError(fmt.Sprintf("worker: workflow %q cannot receive %s: no stream captures that subject", r.Workflow, r.Subject))
			}
			if err != nil {
				return fmt.Errorf("worker: find the stream of subject %s: %w", r.Subject, err)
			}
			streams[r.Subject] = stream
		}
		infos, ok := consumers[stream]
		if !ok {
			st, err := js.Stream(ctx, stream)
			if err != nil {
				return fmt.Errorf("worker: stream %s: %w", stream, err)
			}
			list := st.ListConsumers(ctx)
			for info := range list.Info() {
				infos = append(infos, info)
			}
			if err := list.Err(); err != nil {
				return fmt.Errorf("worker: list the consumers of stream %s: %w", stream, err)
			}
			consumers[stream] = infos
		}
		var workflows []string
		for _, info := range infos {
			name, ok := consumerWorkflow(info)
			if !ok || !consumerCovers(info.Config, r.Subject) {
				continue
			}
			if name == r.Workflow {
				return nil
			}
			workflows = append(workflows, name)
		}
		slices.Sort(workflows)
		now := "none"
		if len(workflows) > 0 {
			now = strings.Join(workflows, ", ")
		}
		return noWorkflowError(fmt.Sprintf("worker: workflow %q no longer reads %s: stream %s has no consumer %s%s for it (workflows reading it now: %s); restore the workflow, or purge the entry",
			r.Workflow, r.Subject, stream, ConsumerPrefixDefault, r.Workflow, now))
	}
}

// noWorkflowError is a message that wraps [ErrNoWorkflow] without repeating
// it.
type noWorkflowError string

func (e noWorkflowError) Error() string        { return string(e) }
func (e noWorkflowError) Is(target error) bool { return target == ErrNoWorkflow }

// consumerCovers reports whether a consumer with cfg receives messages on
// subj.
func consumerCovers(cfg jetstream.ConsumerConfig, subj string) bool {
	filters := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		filters = append(filters, cfg.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	return slices.ContainsFunc(filters, func(f string) bool { return subject.Covers(f, subj) })
}

// consumerWorkflow names the workflow a consumer of the leads stream is
// for: the one its metadata names when kustomer-sync made it (whatever its
// name's prefix, Config.ConsumerPrefix), else the name after the default
// prefix. ok is false for a consumer of no workflow.
func consumerWorkflow(info *jetstream.ConsumerInfo) (name string, ok bool) {
	if md := info.Config.Metadata; md[managedByKey] == managedByValue && md[workflowKey] != "" {
		return md[workflowKey], true
	}
	return strings.CutPrefix(info.Name, ConsumerPrefixDefault)
}
