// Package runlog keeps the run log: one record per processed event, in a
// JetStream stream (RUNS by default), read by `runs list`, `runs show`,
// `status` and the dashboard. A record too large for one message is kept
// whole in an object store bucket and referenced.
package runlog

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
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// Status is the outcome of processing one event.
type Status string

const (
	Succeeded    Status = "succeeded"     // every item created (or found created before)
	Partial      Status = "partial"       // some items created, the others dead-lettered
	Failed       Status = "failed"        // no item created; the failed items were dead-lettered
	DeadLettered Status = "dead_lettered" // the whole event was dead-lettered (poison, mapping)
	Paused       Status = "paused"        // the workflow paused on a systemic failure; the event stays queued
)

// Statuses lists every Status.
var Statuses = []Status{Succeeded, Partial, Failed, DeadLettered, Paused}

// Valid reports whether s is one of [Statuses].
func (s Status) Valid() bool { return slices.Contains(Statuses, s) }

// Item is the outcome of one Loop item of a run.
//
// In JSON an item keeps the run log's two fields: "outcome" is "created",
// "already_created", "updated", "skipped" or "failed" ([outcome.Outcome.Summary]) and, for a
// failure, "class" says which ("permanent", "exhausted"...), so records
// written before Outcome was typed read back the same.
type Item struct {
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

// itemJSON is a Item on the wire. A field added to Item goes here
// too, and in wire and fromWire (a test fills every field to check).
type itemJSON struct {
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
func (it Item) MarshalJSON() ([]byte, error) { return json.Marshal(it.wire()) }

// UnmarshalJSON reads what MarshalJSON writes. A failure without a class
// (no record written so far has one) reads as [outcome.Permanent].
func (it *Item) UnmarshalJSON(b []byte) error {
	var j itemJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	return it.fromWire(j)
}

func (it Item) wire() itemJSON {
	j := itemJSON{
		Index: it.Index, Outcome: it.Outcome.Summary(), CustomerID: it.CustomerID, Attempts: it.Attempts, Error: it.Error,
		BulkJob: it.BulkJob, Dropped: it.Dropped,
	}
	if it.Outcome.Failed() {
		j.Class = it.Outcome
	}
	return j
}

func (it *Item) fromWire(j itemJSON) error {
	o := cmp.Or(j.Class, outcome.Permanent)
	if j.Outcome != "failed" {
		var err error
		if o, err = outcome.Parse(j.Outcome); err != nil {
			return fmt.Errorf("runlog: run item %d: %w", j.Index, err)
		}
	}
	*it = Item{
		Index: j.Index, Outcome: o, CustomerID: j.CustomerID, Attempts: j.Attempts, Error: j.Error,
		BulkJob: j.BulkJob, Dropped: j.Dropped,
	}
	return nil
}

// recordFields is a Record without its methods.
type recordFields Record

// recordJSON is a Record on the wire: its items as plain structs, so
// a Loop of thousands of items is read and written in one pass, not one
// call each.
type recordJSON struct {
	recordFields
	Items []itemJSON `json:"items"`
}

// encodeRecord is json.Marshal(r) in one pass: the same bytes, without a
// call to [Item.MarshalJSON] (and a compaction of its output) per item.
func encodeRecord(r Record) ([]byte, error) {
	j := recordJSON{recordFields: recordFields(r)}
	if r.Items != nil {
		j.Items = make([]itemJSON, len(r.Items))
		for i, it := range r.Items {
			j.Items[i] = it.wire()
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Record(j.recordFields)
	out.Items = nil
	if j.Items != nil {
		out.Items = make([]Item, len(j.Items))
		for i, it := range j.Items {
			if err := out.Items[i].fromWire(it); err != nil {
				return err
			}
		}
	}
	*r = out
	return nil
}

// Record is the run log's record of one processed event.
type Record struct {
	ID        string    `json:"id"`       // unique per run; also its Nats-Msg-Id
	Workflow  string    `json:"workflow"` // a subject token (no '.', '*', '>' or spaces)
	EventID   string    `json:"event_id"` // the event's Nats-Msg-Id
	Subject   string    `json:"subject"`
	StreamSeq uint64    `json:"stream_seq"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended"`
	Status    Status    `json:"status"`
	Replay    bool      `json:"replay"`
	// ReplayOf links a replay to the dead letter it came from and the runs
	// before it; nil for a new event.
	ReplayOf *Replay `json:"replay_of,omitempty"`
	Items    []Item  `json:"items"`
	// ItemsOmitted counts the items left out of Items because the record
	// would not fit in one NATS message (a Loop of thousands of items);
	// failed items are kept first. The whole record is then in Object, and
	// [Log.Get] and [Log.List] return it whole.
	ItemsOmitted int    `json:"items_omitted,omitempty"`
	Error        string `json:"error,omitempty"`
	// Object names the object of the run log's bucket holding the whole
	// record, when it did not fit in one message.
	Object string `json:"object,omitempty"`
	// TraceID is the trace of the event's span, when it was traced and
	// sampled (hex).
	TraceID string `json:"trace_id,omitempty"`
}

// Done counts the run's items that succeeded (created, updated, skipped or
// already created): `runs list` and the dashboard show it as Done()/len(Items).
func (r Record) Done() int {
	n := 0
	for _, it := range r.Items {
		if it.Outcome.Succeeded() {
			n++
		}
	}
	return n
}

// Reason is what went wrong in the run, in one line: the event's error, or
// the first failed item's, naming it and how many others failed; "" when
// nothing failed.
func (r Record) Reason() string {
	if r.Error != "" {
		return r.Error
	}
	var first *Item
	failed := 0
	for i, it := range r.Items {
		if it.Error == "" && !it.Outcome.Failed() {
			continue
		}
		if first == nil {
			first = &r.Items[i]
		}
		failed++
	}
	if first == nil {
		return ""
	}
	msg := cmp.Or(first.Error, "-")
	if failed == 1 {
		return fmt.Sprintf("#%d: %s", first.Index, msg)
	}
	return fmt.Sprintf("#%d and %d more: %s", first.Index, failed-1, msg)
}

// DeadLettered reports whether the run may have left a dead letter: it
// failed in part or in whole.
func (r Record) DeadLettered() bool {
	return r.Status == Failed || r.Status == Partial || r.Status == DeadLettered
}

// Replay is what a replay's run record says of where it comes from.
type Replay struct {
	DeadLetter  uint64 `json:"dead_letter"`            // the entry replayed
	Stream      string `json:"stream,omitempty"`       // its dead-letter stream
	Run         string `json:"run,omitempty"`          // the run that dead-lettered it
	OriginalRun string `json:"original_run,omitempty"` // the event's first run
	Count       int    `json:"count"`                  // replays of the event, this one included
	Attempts    int    `json:"prior_attempts"`         // attempts spent before this replay
}

// NewReplay is what a replay's run record says of rp, the replay marker of
// its event; nil for a new event.
func NewReplay(rp *dlq.Replay) *Replay {
	if rp == nil {
		return nil
	}
	return &Replay{DeadLetter: rp.Entry, Stream: rp.Stream, Run: rp.Run, OriginalRun: rp.OriginalRun, Count: rp.Count, Attempts: rp.Attempts}
}

const (
	// StreamDefault is the run log's stream.
	StreamDefault = "RUNS"
	// SubjectPrefixDefault prefixes run subjects:
	// runs.<workflow>.<status>.<id>.
	SubjectPrefixDefault = "runs"
	// MaxAgeDefault keeps runs for 30 days.
	MaxAgeDefault = 30 * 24 * time.Hour
	// MaxBytesDefault bounds the run log at 1 GiB; the oldest runs go
	// first.
	MaxBytesDefault = overflow.MaxBytesDefault
	// ReplicasDefault is one replica; use 3 on a 3-node cluster.
	ReplicasDefault = overflow.ReplicasDefault
	// BucketDefault is the Object Store bucket that keeps run records
	// too large for one message, for as long as the run log keeps runs.
	BucketDefault = "KSYNC_RUN_RECORDS"
)

// Config configures a [Log]. The zero value is the default.
type Config struct {
	Stream        string        // default StreamDefault
	SubjectPrefix string        // default SubjectPrefixDefault; the stream captures <prefix>.>
	MaxAge        time.Duration // default MaxAgeDefault
	MaxBytes      int64         // default MaxBytesDefault
	Replicas      int           // default ReplicasDefault
	Bucket        string        // default BucketDefault; same age, byte limit and replicas as the stream
}

func (c Config) WithDefaults() Config {
	c.Stream = cmp.Or(c.Stream, StreamDefault)
	c.SubjectPrefix = cmp.Or(c.SubjectPrefix, SubjectPrefixDefault)
	c.MaxAge = cmp.Or(c.MaxAge, MaxAgeDefault)
	c.MaxBytes = cmp.Or(c.MaxBytes, MaxBytesDefault)
	c.Replicas = cmp.Or(c.Replicas, ReplicasDefault)
	c.Bucket = cmp.Or(c.Bucket, BucketDefault)
	return c
}

func (c Config) validate() error {
	if strings.ContainsAny(c.SubjectPrefix, "*> \t\r\n") || strings.HasPrefix(c.SubjectPrefix, ".") || strings.HasSuffix(c.SubjectPrefix, ".") {
		return fmt.Errorf("runlog: subject prefix %q is not a valid subject", c.SubjectPrefix)
	}
	return c.limits().Validate("runlog")
}

func (c Config) limits() overflow.Limits {
	return overflow.Limits{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, Replicas: c.Replicas}
}

// Log stores run records in a JetStream stream, one message per run on
// <prefix>.<workflow>.<status>.<id>, so reading by workflow, status or id
// needs no scan of unrelated runs. It is safe for concurrent use.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
}

// New creates the run log's stream, or updates it to cfg.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	cfg = cfg.WithDefaults()
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
		if x := subject.ExplainOverlap(ctx, js, sc, nil, err); x.Error() != err.Error() {
			return nil, x
		}
		return nil, fmt.Errorf("runlog: stream %s: %w", cfg.Stream, err)
	}
	if err := overflow.Ensure(ctx, js, overflow.Bucket{
		Name:        cfg.Bucket,
		Description: "kustomer-sync run log: run records too large for one message",
		Limits:      cfg.limits(),
	}); err != nil {
		return nil, fmt.Errorf("runlog: %w", err)
	}
	return &Log{js: js, stream: s, cfg: cfg}, nil
}

// Open opens an existing run log's stream for reading, without
// changing its configuration (what `runs list` uses).
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	cfg = cfg.WithDefaults()
	s, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("runlog: stream %s: %w", cfg.Stream, err)
	}
	if subj := s.CachedInfo().Config.Subjects; len(subj) == 1 && strings.HasSuffix(subj[0], ".>") {
		cfg.SubjectPrefix = strings.TrimSuffix(subj[0], ".>")
	}
	return &Log{js: js, stream: s, cfg: cfg}, nil
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
func (l *Log) Write(ctx context.Context, r Record) error {
	switch {
	case r.ID == "":
		return errors.New("runlog: write: empty run ID")
	case !validToken(r.Workflow):
		return fmt.Errorf("runlog: write run %s: workflow %q is not a subject token", r.ID, r.Workflow)
	case !r.Status.Valid():
		return fmt.Errorf("runlog: write run %s: status %q: want one of %v", r.ID, r.Status, Statuses)
	}
	r.Object = ""
	data, err := encodeRecord(r)
	if err != nil {
		return fmt.Errorf("runlog: write run %s: %w", r.ID, err)
	}
	if limit := recordMax(l.js); len(data) > limit {
		if data, err = l.storeWhole(ctx, r, data, limit); err != nil {
			return fmt.Errorf("runlog: write run %s: %w", r.ID, err)
		}
	}
	msg := &nats.Msg{Subject: l.subject(r.Workflow, string(r.Status), idToken(r.ID)), Data: data}
	if _, err := l.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID)); err != nil {
		return fmt.Errorf("runlog: write run %s: %w", r.ID, err)
	}
	return nil
}

// storeWhole puts the whole record (data) in the bucket and returns the
// message to publish in its place: as much of r as fits in limit, naming
// the object. The object is named after the run, so writing the run again
// replaces it.
func (l *Log) storeWhole(ctx context.Context, r Record, data []byte, limit int) ([]byte, error) {
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
func (l *Log) whole(ctx context.Context, r *Record) error {
	if r.Object == "" {
		return nil
	}
	data, err := overflow.Get(ctx, l.js, l.cfg.Bucket, r.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("runlog: run %s: %w", r.ID, err)
	}
	var full Record
	if err := json.Unmarshal(data, &full); err != nil {
		return fmt.Errorf("runlog: run %s: object %s: %w", r.ID, r.Object, err)
	}
	full.Object = r.Object
	*r = full
	return nil
}

// recordMax is the largest run record to publish: the server's maximum
// payload, less room for headers.
func recordMax(js jetstream.JetStream) int {
	return overflow.MaxPayload(js) - 4<<10
}

// fitRecord encodes r, leaving out created items (failed ones are kept
// first) until it fits in limit bytes.
func fitRecord(r Record, limit int) ([]byte, error) {
	data, err := encodeRecord(r)
	if err != nil || len(data) <= limit {
		return data, err
	}
	kept := make([]Item, 0, len(r.Items))
	var created []Item
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

func (l *Log) subject(workflow, status, id string) string {
	return l.cfg.SubjectPrefix + "." + workflow + "." + status + "." + id
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
