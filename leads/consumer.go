package leads

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// ConsumerConfig is how [EnsureConsumer] makes a workflow's durable
// consumer.
type ConsumerConfig struct {
	Name       string // the durable name: ConsumerPrefixDefault (or the configured prefix) and the workflow's
	AckWait    time.Duration
	MaxDeliver int
	// Workflows are all the config's: a new consumer for a workflow not
	// among them before (renamed) continues where the consumer of its old
	// name stopped.
	Workflows []*mapping.Workflow
}

// EnsureConsumer creates wf's durable consumer on st where the workflow's
// start option says, or updates an existing one, which keeps its position
// (a changed start does not move it). before is the stream's state before
// the workflows started: start: new begins after it.
func EnsureConsumer(ctx context.Context, st jetstream.Stream, wf *mapping.Workflow, cc ConsumerConfig, before jetstream.StreamState, log zerolog.Logger) (jetstream.Consumer, error) {
	name := cc.Name
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "kustomer-sync workflow " + wf.Name,
		FilterSubject: wf.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cc.AckWait,
		MaxDeliver:    cc.MaxDeliver,
		MaxAckPending: max(1000, wf.MaxInFlight*16),
		Metadata:      map[string]string{ManagedByKey: ManagedByValue, WorkflowKey: wf.Name},
	}
	log = log.With().Str("workflow", wf.Name).Str("consumer", name).Logger()
	existing, err := st.Consumer(ctx, name)
	if err == nil {
		// Another replica may just have created it: either way, keep its
		// start, and what its creation recorded (skipped, continues).
		prev := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = prev.DeliverPolicy, prev.OptStartSeq, prev.OptStartTime
		for _, k := range []string{SkippedKey, ContinuesKey} {
			if v, ok := prev.Metadata[k]; ok {
				cfg.Metadata[k] = v
			}
		}
		cons, err := st.UpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("leads: workflow %s: update consumer %s: %w", wf.Name, name, err)
		}
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("leads: workflow %s: consumer %s: %w", wf.Name, name, err)
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
		if pred, ok := predecessor(ctx, st, wf, cc.Workflows); ok {
			// A renamed workflow: it continues where the consumer of its
			// old name stopped, so nothing is skipped or processed twice.
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pred.AckFloor.Stream+1
			cfg.Metadata[ContinuesKey] = pred.Name
			where = fmt.Sprintf("at stream sequence %d, where consumer %s (of a workflow not in the config, on the same subject %s) stopped: a renamed workflow continues, nothing skipped or processed twice",
				pred.AckFloor.Stream+1, pred.Name, wf.Subject)
		}
	}
	cons, err := st.CreateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return EnsureConsumer(ctx, st, wf, cc, before, log) // another replica was first
	}
	if err != nil {
		return nil, fmt.Errorf("leads: workflow %s: create consumer %s: %w", wf.Name, name, err)
	}
	if held > 0 {
		// Events published between the two readings only make the count
		// smaller: it never reports an event skipped that is not.
		pending := cons.CachedInfo().NumPending
		if skipped := held - min(held, pending); skipped > 0 {
			cfg.Metadata[SkippedKey] = strconv.FormatUint(skipped, 10)
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
	_ = EachWorkflowConsumer(ctx, st, func(name string, info *jetstream.ConsumerInfo) {
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
