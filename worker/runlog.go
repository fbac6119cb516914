package worker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/overflow"
	"github.com/kustomer-sync/kustomer-sync/scan"
)

// RunStatus is the outcome of processing one event.
type RunStatus string

const (
	RunSucceeded    RunStatus = "succeeded"     // every item created (or found created before)
	RunPartial      RunStatus = "partial"       // some items created, the others dead-lettered
	RunFailed       RunStatus = "failed"        // no item created; the failed items were dead-lettered
	RunDeadLettered RunStatus = "dead_lettered" // the whole event was dead-lettered (poison, mapping)
	RunPaused       RunStatus = "paused"        // the workflow paused on a systemic failure; the event stays queued
)

// RunStatuses lists every RunStatus.
var RunStatuses = []RunStatus{RunSucceeded, RunPartial, RunFailed, RunDeadLettered, RunPaused}

// Valid reports whether s is one of [RunStatuses].
func (s RunStatus) Valid() bool { return slices.Contains(RunStatuses, s) }

// RunItem is the outcome of one Loop item of a run.
//
// In JSON an item keeps the run log's two fields: "outcome" is "created",
// "already_created", "updated", "skipped" or "failed" ([outcome.Outcome.Summary]) and, for a
// failure, "class" says which ("permanent", "exhausted"...), so records
// written before Outcome was typed read back the same.
type RunItem struct {
	Index      int
	Outcome    outcome.Outcome
	CustomerID string
	Attempts   int
	Error      string
	BulkJob    string // bulk mode: the Kustomer bulk job the item was last sent in
	// Dropped names the list entries an update could not add to the
	// customer (Kustomer keeps at most 10 per list), e.g. "emails: a@b.co".
	Dropped []string
}

// runItemJSON is a RunItem on the wire. A field added to RunItem goes here
// too, and in wire and fromWire (a test fills every field to check).
type runItemJSON struct {
	Index      int             `json:"index"`
	Outcome    string          `json:"outcome"`
	CustomerID string          `json:"customer_id,omitempty"`
	Attempts   int             `json:"attempts"`
	Class      outcome.Outcome `json:"class,omitempty"`
	Error      string          `json:"error,omitempty"`
	BulkJob    string          `json:"bulk_job,omitempty"`
	Dropped    []string        `json:"dropped,omitempty"`
}

// MarshalJSON writes the item's outcome as its summary and, for a failure,
// its class.
func (it RunItem) MarshalJSON() ([]byte, error) { return json.Marshal(it.wire()) }

// UnmarshalJSON reads what MarshalJSON writes. A failure without a class
// (no record written so far has one) reads as [outcome.Permanent].
func (it *RunItem) UnmarshalJSON(b []byte) error {
	var j runItemJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	return it.fromWire(j)
}

func (it RunItem) wire() runItemJSON {
	j := runItemJSON{
		Index: it.Index, Outcome: it.Outcome.Summary(), CustomerID: it.CustomerID, Attempts: it.Attempts, Error: it.Error,
		BulkJob: it.BulkJob, Dropped: it.Dropped,
	}
	if it.Outcome.Failed() {
		j.Class = it.Outcome
	}
	return j
}

func (it *RunItem) fromWire(j runItemJSON) error {
	o := cmp.Or(j.Class, outcome.Permanent)
	if j.Outcome != "failed" {
		var err error
		if o, err = outcome.Parse(j.Outcome); err != nil {
			return fmt.Errorf("worker: run item %d: %w", j.Index, err)
		}
	}
	*it = RunItem{
		Index: j.Index, Outcome: o, CustomerID: j.CustomerID, Attempts: j.Attempts, Error: j.Error,
		BulkJob: j.BulkJob, Dropped: j.Dropped,
	}
	return nil
}

// runRecordFields is a RunRecord without its methods.
type runRecordFields RunRecord

// runRecordJSON is a RunRecord on the wire: its items as plain structs, so
// a Loop of thousands of items is read and written in one pass, not one
// call each.
type runRecordJSON struct {
	runRecordFields
	Items []runItemJSON `json:"items"`
}

// encodeRecord is json.Marshal(r) in one pass: the same bytes, without a
// call to [RunItem.MarshalJSON] (and a compaction of its output) per item.
func encodeRecord(r RunRecord) ([]byte, error) {
	j := runRecordJSON{runRecordFields: runRecordFields(r)}
	if r.Items != nil {
		j.Items = make([]runItemJSON, len(r.Items))
		for i, it := range r.Items {
			j.Items[i] = it.wire()
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *RunRecord) UnmarshalJSON(b []byte) error {
	var j runRecordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := RunRecord(j.runRecordFields)
	out.Items = nil
	if j.Items != nil {
		out.Items = make([]RunItem, len(j.Items))
		for i, it := range j.Items {
			if err := out.Items[i].fromWire(it); err != nil {
				return err
			}
		}
	}
	*r = out
	return nil
}

// RunRecord is the run log's record of one processed event.
type RunRecord struct {
	ID        string    `json:"id"`       // unique per run; also its Nats-Msg-Id
	Workflow  string    `json:"workflow"` // a subject token (no '.', '*', '>' or spaces)
	EventID   string    `json:"event_id"` // the event's Nats-Msg-Id
	Subject   string    `json:"subject"`
	StreamSeq uint64    `json:"stream_seq"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended"`
	Status    RunStatus `json:"status"`
	Replay    bool      `json:"replay"`
	// ReplayOf links a replay to the dead letter it came from and the runs
	// before it; nil for a new event.
	ReplayOf *RunReplay `json:"replay_of,omitempty"`
	Items    []RunItem  `json:"items"`
	// ItemsOmitted counts the items left out of Items because the record
	// would not fit in one NATS message (a Loop of thousands of items);
	// failed items are kept first. The whole record is then in Object, and
	// [RunLog.Get] and [RunLog.List] return it whole.
	ItemsOmitted int    `json:"items_omitted,omitempty"`
	Error        string `json:"error,omitempty"`
	// Object names the object of the run log's bucket holding the whole
	// record, when it did not fit in one message.
	Object string `json:"object,omitempty"`
	// TraceID is the trace of the event's span, when it was traced and
	// sampled (hex).
	TraceID string `json:"trace_id,omitempty"`
}

// RunReplay is what a replay's run record says of where it comes from.
type RunReplay struct {
	DeadLetter  uint64 `json:"dead_letter"`            // the entry replayed
	Stream      string `json:"stream,omitempty"`       // its dead-letter stream
	Run         string `json:"run,omitempty"`          // the run that dead-lettered it
	OriginalRun string `json:"original_run,omitempty"` // the event's first run
	Count       int    `json:"count"`                  // replays of the event, this one included
	Attempts    int    `json:"prior_attempts"`         // attempts spent before this replay
}

func runReplay(rp *dlq.Replay) *RunReplay {
	if rp == nil {
		return nil
	}
	return &RunReplay{DeadLetter: rp.Entry, Stream: rp.Stream, Run: rp.Run, OriginalRun: rp.OriginalRun, Count: rp.Count, Attempts: rp.Attempts}
}

const (
	// RunLogStreamDefault is the run log's stream.
	RunLogStreamDefault = "RUNS"
	// RunLogSubjectPrefixDefault prefixes run subjects:
	// runs.<workflow>.<status>.<id>.
	RunLogSubjectPrefixDefault = "runs"
	// RunLogMaxAgeDefault keeps runs for 30 days.
	RunLogMaxAgeDefault = 30 * 24 * time.Hour
	// RunLogMaxBytesDefault bounds the run log at 1 GiB; the oldest runs go
	// first.
	RunLogMaxBytesDefault = overflow.MaxBytesDefault
	// RunLogReplicasDefault is one replica; use 3 on a 3-node cluster.
	RunLogReplicasDefault = overflow.ReplicasDefault
	// RunLogBucketDefault is the Object Store bucket that keeps run records
	// too large for one message, for as long as the run log keeps runs.
	RunLogBucketDefault = "KSYNC_RUN_RECORDS"
)

// RunLogConfig configures a [RunLog]. The zero value is the default.
type RunLogConfig struct {
	Stream        string        // default RunLogStreamDefault
	SubjectPrefix string        // default RunLogSubjectPrefixDefault; the stream captures <prefix>.>
	MaxAge        time.Duration // default RunLogMaxAgeDefault
	MaxBytes      int64         // default RunLogMaxBytesDefault
	Replicas      int           // default RunLogReplicasDefault
	Bucket        string        // default RunLogBucketDefault; same age, byte limit and replicas as the stream
}

func (c RunLogConfig) withDefaults() RunLogConfig {
	c.Stream = cmp.Or(c.Stream, RunLogStreamDefault)
	c.SubjectPrefix = cmp.Or(c.SubjectPrefix, RunLogSubjectPrefixDefault)
	c.MaxAge = cmp.Or(c.MaxAge, RunLogMaxAgeDefault)
	c.MaxBytes = cmp.Or(c.MaxBytes, RunLogMaxBytesDefault)
	c.Replicas = cmp.Or(c.Replicas, RunLogReplicasDefault)
	c.Bucket = cmp.Or(c.Bucket, RunLogBucketDefault)
	return c
}

func (c RunLogConfig) validate() error {
	if strings.ContainsAny(c.SubjectPrefix, "*> \t\r\n") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		return fmt.Errorf("worker: run log: subject prefix %q is not a valid subject", c.SubjectPrefix)
	}
	return c.limits().Validate("worker: run log")
}

func (c RunLogConfig) limits() overflow.Limits {
	return overflow.Limits{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, Replicas: c.Replicas}
}

// ErrRunNotFound is returned by [RunLog.Get] for an unknown (or expired) run.
var ErrRunNotFound = errors.New("worker: run not found")

// runNotFound is a message that wraps [ErrRunNotFound] without repeating it.
type runNotFound string

func (e runNotFound) Error() string        { return string(e) }
func (e runNotFound) Is(target error) bool { return target == ErrRunNotFound }

// RunLog stores run records in a JetStream stream, one message per run on
// <prefix>.<workflow>.<status>.<id>, so reading by workflow, status or id
// needs no scan of unrelated runs. It is safe for concurrent use.
type RunLog struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    RunLogConfig
}

// NewRunLog creates the run log's stream, or updates it to cfg.
func NewRunLog(ctx context.Context, js jetstream.JetStream, cfg RunLogConfig) (*RunLog, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "kustomer-sync run log: one record per processed event",
		Subjects:    []string{cfg.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		AllowDirect: true,
	})
	if err != nil {
		sc := jetstream.StreamConfig{Name: cfg.Stream, Subjects: []string{cfg.SubjectPrefix + ".>"}}
		if x := explainOverlap(ctx, js, sc, nil, err); x.Error() != err.Error() {
			return nil, x
		}
		return nil, fmt.Errorf("worker: run log: stream %s: %w", cfg.Stream, err)
	}
	if err := overflow.Ensure(ctx, js, overflow.Bucket{
		Name:        cfg.Bucket,
		Description: "kustomer-sync run log: run records too large for one message",
		Limits:      cfg.limits(),
	}); err != nil {
		return nil, fmt.Errorf("worker: run log: %w", err)
	}
	return &RunLog{js: js, stream: s, cfg: cfg}, nil
}

// OpenRunLog opens an existing run log's stream for reading, without
// changing its configuration (what `runs list` uses).
func OpenRunLog(ctx context.Context, js jetstream.JetStream, cfg RunLogConfig) (*RunLog, error) {
	cfg = cfg.withDefaults()
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("worker: run log: stream %s: %w", cfg.Stream, err)
	}
	if subj := s.CachedInfo().Config.Subjects; len(subj) == 1 && strings.HasSuffix(subj[0], ".>") {
		cfg.SubjectPrefix = strings.TrimSuffix(subj[0], ".>")
	}
	return &RunLog{js: js, stream: s, cfg: cfg}, nil
}

// Write publishes r and waits for JetStream's acknowledgement; call it
// before acknowledging the event. The Nats-Msg-Id is r.ID, so writing the
// same run twice within the duplicate window stores it once: give each run
// (each delivery) its own ID. r.ID, r.Workflow and a valid r.Status are
// required; Workflow must be a subject token.
//
// A record larger than the server's max_payload (read from the connection)
// is stored whole in the run log's bucket first, and the message holds as
// much of it as fits (failed items first) and names the object.
func (l *RunLog) Write(ctx context.Context, r RunRecord) error {
	switch {
	case r.ID == "":
		return errors.New("worker: run log: write: empty run ID")
	case !validToken(r.Workflow):
		return fmt.Errorf("worker: run log: write run %s: workflow %q is not a subject token", r.ID, r.Workflow)
	case !r.Status.Valid():
		return fmt.Errorf("worker: run log: write run %s: status %q: want one of %v", r.ID, r.Status, RunStatuses)
	}
	r.Object = ""
	data, err := encodeRecord(r)
	if err != nil {
		return fmt.Errorf("worker: run log: write run %s: %w", r.ID, err)
	}
	if limit := runRecordMax(l.js); len(data) > limit {
		if data, err = l.storeWhole(ctx, r, data, limit); err != nil {
			return fmt.Errorf("worker: run log: write run %s: %w", r.ID, err)
		}
	}
	msg := &nats.Msg{Subject: l.subject(r.Workflow, string(r.Status), idToken(r.ID)), Data: data}
	if _, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID)); err != nil {
		return fmt.Errorf("worker: run log: write run %s: %w", r.ID, err)
	}
	return nil
}

// storeWhole puts the whole record (data) in the bucket and returns the
// message to publish in its place: as much of r as fits in limit, naming
// the object. The object is named after the run, so writing the run again
// replaces it.
func (l *RunLog) storeWhole(ctx context.Context, r RunRecord, data []byte, limit int) ([]byte, error) {
	r.Object = "run." + idToken(r.ID)
	if err := overflow.Put(ctx, l.js, l.cfg.Bucket, r.Object, data); err != nil {
		return nil, err
	}
	if len(r.Error) > maxRunErrorLen {
		r.Error = strings.ToValidUTF8(r.Error[:maxRunErrorLen], "") + "…"
	}
	return fitRecord(r, limit)
}

// maxRunErrorLen bounds a run's error in the message of a record too large
// for one; the object keeps it whole.
const maxRunErrorLen = 4096

// whole replaces r by the whole record its object holds, if it names one.
// An object gone (expired before the message) leaves r as it is.
func (l *RunLog) whole(ctx context.Context, r *RunRecord) error {
	if r.Object == "" {
		return nil
	}
	data, err := overflow.Get(ctx, l.js, l.cfg.Bucket, r.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker: run log: run %s: %w", r.ID, err)
	}
	var full RunRecord
	if err := json.Unmarshal(data, &full); err != nil {
		return fmt.Errorf("worker: run log: run %s: object %s: %w", r.ID, r.Object, err)
	}
	full.Object = r.Object
	*r = full
	return nil
}

// runRecordMax is the largest run record to publish: the server's maximum
// payload, less room for headers.
func runRecordMax(js jetstream.JetStream) int {
	return overflow.MaxPayload(js) - 4<<10
}

// fitRecord encodes r, leaving out created items (failed ones are kept
// first) until it fits in limit bytes.
func fitRecord(r RunRecord, limit int) ([]byte, error) {
	data, err := encodeRecord(r)
	if err != nil || len(data) <= limit {
		return data, err
	}
	kept := make([]RunItem, 0, len(r.Items))
	var created []RunItem
	for _, it := range r.Items {
		if !it.Outcome.Succeeded() {
			kept = append(kept, it)
		} else {
			created = append(created, it)
		}
	}
	// Shrink by the share that does not fit, then step down until it does.
	n := len(created) * limit / len(data)
	for {
		r2 := r
		r2.Items = append(kept[:len(kept):len(kept)], created[:n]...)
		r2.ItemsOmitted = len(r.Items) - len(r2.Items)
		if data, err = encodeRecord(r2); err != nil || len(data) <= limit {
			return data, err
		}
		if n == 0 {
			if len(r2.Items) == 0 {
				return nil, fmt.Errorf("record of %d bytes does not fit in %d", len(data), limit)
			}
			kept = kept[:len(kept)/2]
			continue
		}
		n = n * 9 / 10
	}
}

// RunFilter selects runs. Criteria combine with AND; the zero value selects
// every run.
type RunFilter struct {
	Workflow string    // only this workflow
	Status   RunStatus // only this status
	Since    time.Time // started at or after (stored at or after, for the scan)
	Limit    int       // at most this many, the newest; 0 = no limit
}

// List returns the runs that match f, newest first (by start time; runs
// that started together in the order they ended, latest first). With a Limit and no
// Since, it reads back from the end of the stream in growing windows, so
// listing the last 50 runs costs about 50 reads, not the whole log.
func (l *RunLog) List(ctx context.Context, f RunFilter) ([]RunRecord, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("worker: run log: negative limit %d", f.Limit)
	}
	if f.Workflow != "" && !validToken(f.Workflow) {
		return nil, fmt.Errorf("worker: run log: workflow %q is not a subject token", f.Workflow)
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, fmt.Errorf("worker: run log: status %q: want one of %v", f.Status, RunStatuses)
	}
	filter := l.subject(cmp.Or(f.Workflow, "*"), cmp.Or(string(f.Status), "*"), "*")
	keep := func(r RunRecord) bool { return f.Since.IsZero() || !r.Started.Before(f.Since) }

	info, err := l.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("worker: run log: %w", err)
	}
	st := info.State
	if st.Msgs == 0 {
		return nil, nil
	}

	var runs []RunRecord
	if f.Limit == 0 || !f.Since.IsZero() {
		err := l.scan(ctx, scan.Options{Filter: filter, Since: f.Since}, func(r RunRecord) {
			if !keep(r) {
				return
			}
			runs = append(runs, r)
			if f.Limit > 0 && len(runs) > 2*f.Limit {
				runs = slices.Delete(runs, 0, len(runs)-f.Limit)
			}
		})
		if err != nil {
			return nil, err
		}
	} else {
		for window := uint64(max(2*f.Limit, 64)); ; window *= 2 {
			start := st.FirstSeq
			if st.LastSeq >= window && st.LastSeq-window+1 > st.FirstSeq {
				start = st.LastSeq - window + 1
			}
			runs = runs[:0]
			if err := l.scan(ctx, scan.Options{Filter: filter, StartSeq: start}, func(r RunRecord) { runs = append(runs, r) }); err != nil {
				return nil, err
			}
			if len(runs) >= f.Limit || start <= st.FirstSeq {
				break
			}
		}
	}
	if f.Limit > 0 && len(runs) > f.Limit {
		runs = runs[len(runs)-f.Limit:]
	}
	// Newest first by start: the stream holds runs in the order they ended.
	slices.Reverse(runs)
	slices.SortStableFunc(runs, func(a, b RunRecord) int { return b.Started.Compare(a.Started) })
	for i := range runs {
		if err := l.whole(ctx, &runs[i]); err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// Get returns the latest record of run id, or an error wrapping
// [ErrRunNotFound].
func (l *RunLog) Get(ctx context.Context, id string) (RunRecord, error) {
	if id == "" {
		return RunRecord{}, runNotFound("worker: run log: empty run ID")
	}
	m, err := l.stream.GetLastMsgForSubject(ctx, l.subject("*", "*", idToken(id)))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return RunRecord{}, runNotFound(fmt.Sprintf("worker: run log: no run %s in %s (expired, or never written)", id, l.cfg.Stream))
		}
		return RunRecord{}, fmt.Errorf("worker: run log: get run %s: %w", id, err)
	}
	var r RunRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return RunRecord{}, fmt.Errorf("worker: run log: run %s (seq %d): %w", id, m.Sequence, err)
	}
	return r, l.whole(ctx, &r)
}

func (l *RunLog) subject(workflow, status, id string) string {
	return l.cfg.SubjectPrefix + "." + workflow + "." + status + "." + id
}

// scan decodes the run records that opts select, oldest first, until those
// pending at the start are read. Records that do not decode are skipped: the
// log is diagnostics, not data.
func (l *RunLog) scan(ctx context.Context, opts scan.Options, fn func(RunRecord)) error {
	err := scan.Stream(ctx, l.stream, opts, func(m *jetstream.RawStreamMsg) error {
		var r RunRecord
		if json.Unmarshal(m.Data, &r) == nil {
			fn(r)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("worker: run log: %w", err)
	}
	return nil
}

// validToken reports whether s can be one token of a subject.
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// idToken turns a run ID into a subject token: the ID itself when it is
// one, else "h" and a hash of it.
func idToken(id string) string {
	if validToken(id) && len(id) <= 128 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:16])
}
