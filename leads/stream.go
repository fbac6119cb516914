package leads

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

const (
	// StreamDefault is the stream lead events are published to.
	StreamDefault = "LEADS"
	// DedupWindowDefault is how long JetStream remembers a Nats-Msg-Id, so a
	// re-run publish within it does not duplicate events.
	DedupWindowDefault = 24 * time.Hour
	// StreamMaxAgeDefault is how long a stream kustomer-sync manages keeps an
	// event, processed or not: as long as the ledger remembers created items
	// (ledger.TTLDefault), so a workflow started with "start: all" never
	// meets an event whose items the ledger has forgotten.
	StreamMaxAgeDefault = ledger.TTLDefault

	// ConsumerPrefixDefault prefixes the durable consumer of each workflow.
	ConsumerPrefixDefault = "ksync-"

	// managedBy marks streams and consumers this program created, so it knows
	// it may update them.
	ManagedByKey   = "managed-by"
	ManagedByValue = "kustomer-sync"
	// WorkflowKey names the workflow of a consumer, in its metadata.
	WorkflowKey = "workflow"
)

// Consumer metadata written when a workflow's consumer is created.
const (
	// SkippedKey counts the events the stream held on the workflow's
	// subject that its start (new, or a time) skipped; status shows it.
	SkippedKey = "skipped"
	// ContinuesKey names the consumer of the renamed workflow this one
	// continues.
	ContinuesKey = "continues"
)

// StreamConfig describes the leads stream. When kustomer-sync created it (or
// creates it), Start sets its subjects to the workflows' and its limits to
// these; a stream an operator created is used as it is, and must capture
// every workflow's subject.
type StreamConfig struct {
	Name string // default StreamDefault
	// Subjects are captured besides the workflows' own; default none, so the
	// stream captures exactly the union of the workflows' subjects.
	Subjects    []string
	Replicas    int           // default 1; 3 on a cluster
	DedupWindow time.Duration // default DedupWindowDefault, capped at MaxAge
	// MaxAge is how long an event is kept, processed or not: one still
	// unprocessed then (a worker down or paused that long) is lost. Default
	// StreamMaxAgeDefault; negative: no age limit.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; 0 (default) is no limit. A full
	// stream refuses new events (publishers get an error) rather than drop
	// the oldest, unprocessed ones.
	MaxBytes int64
}

func (c *StreamConfig) SetDefaults() {
	c.Name = cmp.Or(c.Name, StreamDefault)
	c.Replicas = max(c.Replicas, 1)
	if c.DedupWindow == 0 {
		c.DedupWindow = DedupWindowDefault
	}
	if c.MaxAge == 0 {
		c.MaxAge = StreamMaxAgeDefault
	}
}

// need is a subject a stream must capture, and for whom (said in errors).
type need = subject.Need

func WorkflowNeeds(workflows []*mapping.Workflow) []need {
	needs := make([]need, 0, len(workflows))
	for _, wf := range workflows {
		needs = append(needs, need{Subject: wf.Subject, Who: fmt.Sprintf("workflow %q", wf.Name)})
	}
	return needs
}

// JetStreamConfig is the leads stream as kustomer-sync manages it.
func (c StreamConfig) JetStreamConfig(workflows []*mapping.Workflow) jetstream.StreamConfig {
	subjects := slices.Clone(c.Subjects)
	for _, wf := range workflows {
		subjects = append(subjects, wf.Subject)
	}
	cfg := jetstream.StreamConfig{
		Name:        c.Name,
		Description: "kustomer-sync: lead events",
		Subjects:    subject.Union(subjects...),
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Replicas:    c.Replicas,
		Duplicates:  c.DedupWindow,
		MaxAge:      max(c.MaxAge, 0),
		MaxBytes:    -1,
	}
	if cfg.MaxAge > 0 {
		// JetStream refuses a window longer than the events are kept.
		cfg.Duplicates = min(cfg.Duplicates, cfg.MaxAge)
	}
	if c.MaxBytes > 0 {
		cfg.MaxBytes, cfg.Discard = c.MaxBytes, jetstream.DiscardNew
	}
	return cfg
}

// StreamPlan is what [CheckStream] found about the leads stream.
type StreamPlan struct {
	Name    string `json:"name"`
	Exists  bool   `json:"exists"`
	Managed bool   `json:"managed"` // created by kustomer-sync (or not there yet): Start sets its subjects and limits
	// Subjects are what the stream captures once Start ran: the workflows'
	// when managed, the operator's otherwise.
	Subjects []string `json:"subjects"`
	// Abandoned are the consumers of workflows not in the config that still
	// hold unprocessed events (a workflow renamed or removed).
	Abandoned []Abandoned `json:"abandoned,omitempty"`
}

// Abandoned is the durable consumer of a workflow that is not in the config,
// with the events it holds unprocessed: after a rename, the new workflow's
// consumer does not process them (unless it starts early enough).
type Abandoned struct {
	Consumer string `json:"consumer"`
	Workflow string `json:"workflow"`
	Pending  uint64 `json:"pending"` // not delivered yet, or delivered and unacknowledged
}

// String says what to do about it.
func (a Abandoned) String() string {
	return fmt.Sprintf("consumer %s of workflow %q, which is not in the config, holds %d unprocessed event(s): no workflow of the config continues it (a renamed workflow on the same subject and without start: new or a start time would); run the old config until they are done, then delete the consumer", a.Consumer, a.Workflow, a.Pending)
}

// AbandonedConsumers lists the workflow consumers of st whose workflow is not among
// workflows and that hold unprocessed events. Consumers it cannot list are
// not reported.
func AbandonedConsumers(ctx context.Context, st jetstream.Stream, workflows []*mapping.Workflow) []Abandoned {
	var out []Abandoned
	continued := map[string]bool{} // consumers a renamed workflow continues
	_ = EachWorkflowConsumer(ctx, st, func(wf string, info *jetstream.ConsumerInfo) {
		if c := info.Config.Metadata[ContinuesKey]; c != "" && slices.ContainsFunc(workflows, func(w *mapping.Workflow) bool { return w.Name == wf }) {
			continued[c] = true
		}
		pending := info.NumPending + uint64(info.NumAckPending)
		if pending > 0 && !slices.ContainsFunc(workflows, func(w *mapping.Workflow) bool { return w.Name == wf }) {
			out = append(out, Abandoned{Consumer: info.Name, Workflow: wf, Pending: pending})
		}
	})
	out = slices.DeleteFunc(out, func(a Abandoned) bool { return continued[a.Consumer] })
	slices.SortFunc(out, func(a, b Abandoned) int { return strings.Compare(a.Consumer, b.Consumer) })
	return out
}

// EachWorkflowConsumer calls fn for each durable consumer of a kustomer-sync
// workflow on st, with the workflow's name.
func EachWorkflowConsumer(ctx context.Context, st jetstream.Stream, fn func(workflow string, info *jetstream.ConsumerInfo)) error {
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		c := info.Config
		wf, ok := c.Metadata[WorkflowKey], c.Metadata[ManagedByKey] == ManagedByValue
		if !ok { // consumers created before they carried metadata
			wf, ok = strings.CutPrefix(c.Description, "kustomer-sync workflow ")
		}
		if ok && c.Durable != "" {
			fn(wf, info)
		}
	}
	return lister.Err()
}

// CheckStream checks, without changing anything, what Start would do with
// the leads stream: when kustomer-sync manages it, that the subjects it would
// give it overlap no other stream's; when an operator owns it, that it
// captures every workflow's subject. Its errors name the workflow, the
// subject, the stream in the way and the fix.
func CheckStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig, workflows []*mapping.Workflow) (StreamPlan, error) {
	cfg.SetDefaults()
	want := cfg.JetStreamConfig(workflows)
	plan := StreamPlan{Name: cfg.Name, Managed: true, Subjects: want.Subjects}
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return plan, fmt.Errorf("leads: stream %s: %w", cfg.Name, err)
	default:
		plan.Exists = true
		plan.Abandoned = AbandonedConsumers(ctx, st, workflows)
		info := st.CachedInfo()
		if info.Config.Metadata[ManagedByKey] != ManagedByValue {
			plan.Managed, plan.Subjects = false, info.Config.Subjects
			return plan, Uncovered(cfg.Name, info.Config.Subjects, WorkflowNeeds(workflows))
		}
	}
	if other, subj, theirs, found := subject.OverlappingStream(ctx, js, cfg.Name, want.Subjects); found {
		return plan, subject.OverlapError(cfg.Name, WorkflowNeeds(workflows), other, subj, theirs)
	}
	return plan, nil
}

// EnsureStream creates the stream, updates it when this program created it,
// or, when an operator created it, uses it as it is if it captures every
// needed subject, and says which it lacks if not.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, needs []need) (jetstream.Stream, error) {
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[ManagedByKey] = ManagedByValue
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st, err = js.CreateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("leads: create stream %s: %w", cfg.Name, subject.ExplainOverlap(ctx, js, cfg, needs, err))
		}
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("leads: stream %s: %w", cfg.Name, err)
	}
	info := st.CachedInfo()
	if info.Config.Metadata[ManagedByKey] == ManagedByValue {
		st, err = js.UpdateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("leads: update stream %s: %w", cfg.Name, subject.ExplainOverlap(ctx, js, cfg, needs, err))
		}
		return st, nil
	}
	if err := Uncovered(cfg.Name, info.Config.Subjects, needs); err != nil {
		return nil, err
	}
	return st, nil
}

// Uncovered says which needed subjects an operator's stream does not capture.
func Uncovered(stream string, subjects []string, needs []need) error {
	var missing []string
	var lines []string
	for _, n := range needs {
		if !subject.CoveredBy(subjects, n.Subject) {
			missing = append(missing, n.Subject)
			lines = append(lines, fmt.Sprintf("subject %s of %s", n.Subject, n.Who))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("leads: stream %s (created by an operator, not by kustomer-sync) captures %s, not %s: events published there are stored nowhere. Add the subject to the stream (nats stream edit %s --subjects %q), or give the workflow a subject the stream captures",
		stream, strings.Join(subjects, ", "), strings.Join(lines, ", nor "), stream, strings.Join(subject.Union(append(slices.Clone(subjects), missing...)...), ","))
}

// WithUncovered returns subjects plus those of extra that they do not cover,
// so a stream captures every subject a workflow publishes to.
func WithUncovered(subjects, extra []string) []string {
	out := slices.Clone(subjects)
	for _, e := range extra {
		if e != "" && !subject.CoveredBy(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// SubjectWorkflows is what [WorkflowsOn] found: which kustomer-sync
// workflows consume the stream that captures a subject, and which of them
// the subject reaches.
type SubjectWorkflows struct {
	Stream string
	// Filters maps each workflow consuming Stream to its subject filter.
	Filters map[string]string
	// Matching are the workflows whose filter matches the subject, sorted.
	Matching []string
}

// WorkflowsOn finds the stream that captures subj (a literal subject) and
// the kustomer-sync workflows consuming it, from their durable consumers.
func WorkflowsOn(ctx context.Context, js jetstream.JetStream, subj string) (SubjectWorkflows, error) {
	var out SubjectWorkflows
	name, err := js.StreamNameBySubject(ctx, subj)
	if err != nil {
		return out, fmt.Errorf("leads: stream of %s: %w", subj, err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		return out, fmt.Errorf("leads: stream %s: %w", name, err)
	}
	out.Stream, out.Filters = name, map[string]string{}
	err = EachWorkflowConsumer(ctx, st, func(wf string, info *jetstream.ConsumerInfo) {
		c := info.Config
		filters := c.FilterSubjects
		if c.FilterSubject != "" || len(filters) == 0 {
			filters = append(filters, cmp.Or(c.FilterSubject, ">"))
		}
		out.Filters[wf] = strings.Join(filters, ",")
		if slices.ContainsFunc(filters, func(f string) bool { return subject.Covers(f, subj) }) {
			out.Matching = append(out.Matching, wf)
		}
	})
	if err != nil {
		return out, fmt.Errorf("leads: consumers of stream %s: %w", name, err)
	}
	slices.Sort(out.Matching)
	return out, nil
}
