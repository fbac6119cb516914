package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// streamConfig is the leads stream as this replica would manage it: its
// workflows' subjects (added by jetstreamConfig), plus those of every other
// live replica's workflows, so that a reload or a start with fewer
// workflows never stops the stream capturing what another replica still
// runs. A replica whose heartbeat cannot be read is not counted.
func (w *Worker) streamConfig(ctx context.Context) leads.StreamConfig {
	c := w.cfg.Stream
	c.Subjects = slices.Clone(c.Subjects)
	replicas, err := replica.Read(ctx, w.js, w.cfg.Budget.Bucket)
	keep := err != nil
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot read the other replicas' workflows: the leads stream keeps every subject it captures")
	}
	for _, r := range replicas {
		if r.Replica == w.budget.ID() {
			continue
		}
		for _, s := range r.Workflows {
			if s.Subject == "" {
				// A replica of an earlier version does not say what it
				// consumes: keep everything, as when none can be read.
				keep = true
				continue
			}
			c.Subjects = append(c.Subjects, s.Subject)
		}
	}
	if keep {
		// Whatever the stream captures now is kept, rather than drop a
		// subject another replica may run.
		if st, err := w.js.Stream(ctx, c.Name); err == nil && st.CachedInfo().Config.Metadata[leads.ManagedByKey] == leads.ManagedByValue {
			c.Subjects = append(c.Subjects, st.CachedInfo().Config.Subjects...)
		}
	}
	return c
}

// ensureConsumer creates the workflow's durable consumer where the
// workflow's start option says, or updates an existing one, which keeps its
// position (a changed start does not move it).
func (w *Worker) ensureConsumer(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, name string, before jetstream.StreamState) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "kustomer-sync workflow " + wf.Name,
		FilterSubject: wf.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.cfg.AckWait,
		MaxDeliver:    w.cfg.MaxDeliver,
		MaxAckPending: max(1000, wf.MaxInFlight*16),
		Metadata:      map[string]string{leads.ManagedByKey: leads.ManagedByValue, leads.WorkflowKey: wf.Name},
	}
	log := w.log.With().Str("workflow", wf.Name).Str("consumer", name).Logger()
	existing, err := st.Consumer(ctx, name)
	if err == nil {
		// Another replica may just have created it: either way, keep its
		// start, and what its creation recorded (skipped, continues).
		prev := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		for _, k := range []string{leads.SkippedKey, leads.ContinuesKey} {
			if v, ok := prev.Metadata[k]; ok {
				cfg.Metadata[k] = v
			}
		}
		cons, err := st.UpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("worker: workflow %s: update consumer %s: %w", wf.Name, name, err)
		}
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("worker: workflow %s: consumer %s: %w", wf.Name, name, err)
	}
	// What the stream holds on the subject now: what start: new or a
	// start time skips is counted against it.
	var held uint64
	var where string
	switch wf.Start {
	case mapping.StartNew:
		held = heldOn(ctx, st, wf.Subject)
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, before.LastSeq+1
		where = fmt.Sprintf("at stream sequence %d, with events published from now on (start: new)", before.LastSeq+1)
	case mapping.StartTime:
		held = heldOn(ctx, st, wf.Subject)
		t := wf.StartTime
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		where = "at the first event published at or after " + t.Format(time.RFC3339) + " (start: " + t.Format(time.RFC3339) + ")"
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		where = "at the first event the stream holds on " + wf.Subject + " (start: all)"
		if pred, ok := predecessor(ctx, st, wf, w.cfg.Workflows); ok {
			// A renamed workflow: it continues where the consumer of its
			// old name stopped, so nothing is skipped or processed twice.
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pred.AckFloor.Stream+1
			cfg.Metadata[leads.ContinuesKey] = pred.Name
			where = fmt.Sprintf("at stream sequence %d, where consumer %s (of a workflow not in the config, on the same subject %s) stopped: a renamed workflow continues, nothing skipped or processed twice",
				pred.AckFloor.Stream+1, pred.Name, wf.Subject)
		}
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return w.ensureConsumer(ctx, st, wf, name, before) // another replica was first
	}
	if err != nil {
		return nil, fmt.Errorf("worker: workflow %s: create consumer %s: %w", wf.Name, name, err)
	}
	if held > 0 {
		// Events published between the two readings only make the count
		// smaller: it never reports an event skipped that is not.
		pending := cons.CachedInfo().NumPending
		if skipped := held - min(held, pending); skipped > 0 {
			cfg.Metadata[leads.SkippedKey] = strconv.FormatUint(skipped, 10)
			if updated, err := st.UpdateConsumer(ctx, cfg); err == nil {
				cons = updated
			}
			log.Warn().Str("start", wf.Start).Uint64("skipped", skipped).
				Msg(fmt.Sprintf("new consumer for workflow %s starts %s; the %d event(s) stream %s holds on %s before it are skipped (as start asks): remove start, or set start: all, to process them", wf.Name, where, skipped, st.CachedInfo().Config.Name, wf.Subject))
			return cons, nil
		}
	}
	log.Info().Str("start", wf.Start).Msg("new consumer for workflow " + wf.Name + " starts " + where)
	return cons, nil
}

// heldOn counts the events st holds on subject filter; 0 when it cannot
// tell.
func heldOn(ctx context.Context, st jetstream.Stream, filter string) uint64 {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// predecessor finds the consumer of a renamed workflow: a kustomer-sync
// workflow consumer of st on exactly wf's subject whose workflow is not
// among workflows. Of several, the one that stopped earliest, so that
// nothing is skipped.
func predecessor(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, workflows []*mapping.Workflow) (*jetstream.ConsumerInfo, bool) {
	var found *jetstream.ConsumerInfo
	_ = leads.EachWorkflowConsumer(ctx, st, func(name string, info *jetstream.ConsumerInfo) {
		c := info.Config
		if c.FilterSubject != wf.Subject || len(c.FilterSubjects) > 0 {
			return
		}
		if slices.ContainsFunc(workflows, func(w *mapping.Workflow) bool { return w.Name == name }) {
			return
		}
		if found == nil || info.AckFloor.Stream < found.AckFloor.Stream {
			found = info
		}
	})
	return found, found != nil
}
