package dlq

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// KeyBucketDefault is the KV bucket that keeps the deployment's replay
	// key. The worker and `dlq replay` read it; publishers must not.
	KeyBucketDefault = "KSYNC_KEYS"
	// replayKeyName is the key's name in the bucket.
	replayKeyName = "replay-hmac"
	replayKeyLen  = 32
)

// Header names of a replayed event. Every one is covered by
// [HeaderReplaySig]; the worker acts on them only when the signature
// verifies with the deployment's replay key, so a publisher cannot make an
// ordinary event pass for a replay.
const (
	// HeaderReplayItems: the Loop runs only these indexes ("0,3,7").
	HeaderReplayItems = "Ksync-Replay-Items"
	// HeaderReplayOf: the dead-letter entry id (its sequence in the
	// dead-letter stream, decimal).
	HeaderReplayOf = "Ksync-Replay-Of"
	// HeaderReplayStream: the dead-letter stream the entry was in.
	HeaderReplayStream = "Ksync-Replay-Stream"
	// HeaderReplayWorkflow: the workflow that failed the event. Another
	// workflow consuming the same subject acknowledges the replay without
	// processing it.
	HeaderReplayWorkflow = "Ksync-Replay-Workflow"
	// HeaderReplayEventKey: the base of the original items' idempotency
	// keys, so items created before are found, not created again.
	HeaderReplayEventKey = "Ksync-Replay-Event-Key"
	// HeaderReplayEventID: the original event's Nats-Msg-Id.
	HeaderReplayEventID = "Ksync-Replay-Event-Id"
	// HeaderReplayRun: the run that dead-lettered the entry.
	HeaderReplayRun = "Ksync-Replay-Run"
	// HeaderReplayOriginalRun: the event's first run.
	HeaderReplayOriginalRun = "Ksync-Replay-Original-Run"
	// HeaderReplayAttempts: attempts spent on the event before this replay.
	HeaderReplayAttempts = "Ksync-Replay-Attempts"
	// HeaderReplayCount: how many times the event has been replayed, this
	// replay included.
	HeaderReplayCount = "Ksync-Replay-Count"
	// HeaderReplayFirstFailure: when the event first failed (RFC 3339).
	HeaderReplayFirstFailure = "Ksync-Replay-First-Failure"
	// HeaderReplayObject: the object of [PayloadsBucket] holding the
	// payload and items of a replay too large for one message; the body is
	// then empty (see [LoadReplayObject]).
	HeaderReplayObject = "Ksync-Replay-Object"
	// HeaderReplayTrace: the trace and span ids of the dead-lettered
	// event's span, "<trace id>-<span id>" in hex, which the replay's span
	// links to. Signed only when present, so replays signed before it
	// existed still verify.
	HeaderReplayTrace = "Ksync-Replay-Trace"
	// HeaderReplaySig: HMAC-SHA256 of the subject, the headers above and
	// the payload's digest, with the replay key; hex.
	HeaderReplaySig = "Ksync-Replay-Sig"
)

// replaySigned lists the signed headers in the order they are signed.
var replaySigned = []string{
	HeaderReplayStream, HeaderReplayOf, HeaderReplayWorkflow, HeaderReplayItems, HeaderReplayEventKey,
	HeaderReplayEventID, HeaderReplayRun, HeaderReplayOriginalRun, HeaderReplayAttempts, HeaderReplayCount,
	HeaderReplayFirstFailure, HeaderReplayObject,
}

// Replay is what a replayed event carries about the dead letter it comes
// from: how to run it again as the event it was, and its history.
type Replay struct {
	Stream       string    // dead-letter stream
	Entry        uint64    // entry id in Stream
	Workflow     string    // the workflow that failed it; only it runs the replay
	Items        []int     // the Loop items to run; empty: all
	EventKey     string    // base of the original items' idempotency keys
	EventID      string    // the original event's Nats-Msg-Id, if it had one
	Run          string    // the run that dead-lettered the entry
	OriginalRun  string    // the event's first run
	Attempts     int       // attempts spent before this replay, over every earlier failure
	Count        int       // replays of the event, this one included
	FirstFailure time.Time // when the event first failed
	// Object names the replay object holding the payload and Items when
	// they did not fit in the message, whose body is then empty (see
	// [LoadReplayObject]).
	Object string
	// TraceID and SpanID name the span of the event that was
	// dead-lettered (hex), when it was traced.
	TraceID, SpanID string
}

// ReplayKey signs and verifies replay headers. Its bytes live only in the
// KV bucket and in this value, which has no exported field and prints as
// "[redacted]". The zero value verifies nothing. Safe for concurrent use.
type ReplayKey struct{ b []byte }

// String hides the key.
func (k *ReplayKey) String() string { return "[redacted]" }

// GoString hides the key from %#v.
func (k *ReplayKey) GoString() string { return "[redacted]" }

// LoadReplayKey returns the deployment's replay key from bucket
// ([KeyBucketDefault] if empty). The first caller creates the bucket (file
// storage, replicas as given) and a random key, with create-if-absent, so
// replicas starting together agree on one key. Deleting the key makes the
// replays published under it unverifiable: they are then processed as new
// events.
func LoadReplayKey(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*ReplayKey, error) {
	bucket = cmp.Or(bucket, KeyBucketDefault)
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "kustomer-sync: keys of the deployment (replay signing); for the worker and operators only",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: replay key bucket %s: %w", bucket, err)
	}
	fresh := make([]byte, replayKeyLen)
	_, _ = rand.Read(fresh) // crypto/rand.Read never fails
	if _, err := kv.Create(ctx, replayKeyName, fresh); err == nil {
		return &ReplayKey{b: fresh}, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("dlq: replay key in %s: %w", bucket, err)
	}
	e, err := kv.Get(ctx, replayKeyName)
	if err != nil {
		return nil, fmt.Errorf("dlq: replay key in %s: %w", bucket, err)
	}
	if len(e.Value()) < 16 {
		return nil, fmt.Errorf("dlq: replay key in %s is %d bytes; want at least 16 (delete the key %q and restart to make a new one)", bucket, len(e.Value()), replayKeyName)
	}
	return &ReplayKey{b: e.Value()}, nil
}

// header returns the signed replay headers of rp for an event on subject
// with payload. Empty fields are left out.
func (k *ReplayKey) header(subject string, rp Replay, payload []byte) nats.Header {
	h := nats.Header{}
	set := func(name, v string) {
		// Header values lose surrounding spaces and line breaks on the wire;
		// sign what the worker will read.
		if v = strings.TrimSpace(headerSafe(v)); v != "" {
			h.Set(name, v)
		}
	}
	set(HeaderReplayStream, rp.Stream)
	set(HeaderReplayOf, strconv.FormatUint(rp.Entry, 10))
	set(HeaderReplayWorkflow, rp.Workflow)
	set(HeaderReplayItems, FormatItems(rp.Items))
	set(HeaderReplayEventKey, rp.EventKey)
	set(HeaderReplayEventID, rp.EventID)
	set(HeaderReplayRun, rp.Run)
	set(HeaderReplayOriginalRun, rp.OriginalRun)
	if rp.Attempts > 0 {
		set(HeaderReplayAttempts, strconv.Itoa(rp.Attempts))
	}
	set(HeaderReplayCount, strconv.Itoa(max(rp.Count, 1)))
	if !rp.FirstFailure.IsZero() {
		set(HeaderReplayFirstFailure, rp.FirstFailure.UTC().Format(time.RFC3339Nano))
	}
	set(HeaderReplayObject, rp.Object)
	if rp.TraceID != "" && rp.SpanID != "" {
		set(HeaderReplayTrace, rp.TraceID+"-"+rp.SpanID)
	}
	h.Set(HeaderReplaySig, k.sign(subject, h, payload))
	return h
}

// sign is the HMAC of the subject, the signed headers in order and the
// payload's digest, each length-prefixed so no two inputs sign alike.
func (k *ReplayKey) sign(subject string, h nats.Header, payload []byte) string {
	mac := hmac.New(sha256.New, k.b)
	field := func(s string) {
		mac.Write(binary.AppendUvarint(nil, uint64(len(s))))
		mac.Write([]byte(s))
	}
	field("ksync-replay-v1")
	field(subject)
	for _, name := range replaySigned {
		field(name)
		field(h.Get(name))
	}
	if v := h.Get(HeaderReplayTrace); v != "" {
		field(HeaderReplayTrace)
		field(v)
	}
	sum := sha256.Sum256(payload)
	mac.Write(sum[:])
	return hex.EncodeToString(mac.Sum(nil))
}

// HasReplayMarker reports whether h carries any replay header, or the
// original-identity headers publishers once could set to the same effect
// (names compared without regard to case).
func HasReplayMarker(h nats.Header) bool {
	for name := range h {
		n := strings.ToLower(name)
		if strings.HasPrefix(n, "ksync-replay-") || n == strings.ToLower(HeaderMsgID) || n == strings.ToLower(HeaderStreamSeq) {
			return true
		}
	}
	return false
}

// ReadReplay returns the replay instructions of an event on subject with
// header h and payload: nil and no error for an event without replay
// headers; the instructions when they verify with k; and an error wrapping
// [ErrUnverifiedReplay] (saying why) when they do not, or k is nil. A
// caller processes an unverified event as a new one.
func (k *ReplayKey) ReadReplay(subject string, h nats.Header, payload []byte) (*Replay, error) {
	if !HasReplayMarker(h) {
		return nil, nil
	}
	sig := h.Get(HeaderReplaySig)
	switch {
	case k == nil || len(k.b) == 0:
		return nil, fmt.Errorf("%w: no replay key to check them with", ErrUnverifiedReplay)
	case sig == "":
		return nil, fmt.Errorf("%w: no %s header", ErrUnverifiedReplay, HeaderReplaySig)
	case !hmac.Equal([]byte(sig), []byte(k.sign(subject, h, payload))):
		return nil, fmt.Errorf("%w: %s does not match the subject, headers and payload", ErrUnverifiedReplay, HeaderReplaySig)
	}
	rp := &Replay{
		Stream:      h.Get(HeaderReplayStream),
		Workflow:    h.Get(HeaderReplayWorkflow),
		EventKey:    h.Get(HeaderReplayEventKey),
		EventID:     h.Get(HeaderReplayEventID),
		Run:         h.Get(HeaderReplayRun),
		OriginalRun: h.Get(HeaderReplayOriginalRun),
		Object:      h.Get(HeaderReplayObject),
	}
	rp.TraceID, rp.SpanID, _ = strings.Cut(h.Get(HeaderReplayTrace), "-")
	// Signed by us, so these parse; a failure is a bug, reported as such.
	var errs []error
	if v := h.Get(HeaderReplayOf); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		errs = append(errs, err)
		rp.Entry = n
	}
	items, err := ParseItems(h.Get(HeaderReplayItems))
	errs = append(errs, err)
	rp.Items = items
	for _, f := range []struct {
		name string
		dst  *int
	}{{HeaderReplayAttempts, &rp.Attempts}, {HeaderReplayCount, &rp.Count}} {
		if v := h.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			errs = append(errs, err)
			*f.dst = n
		}
	}
	if v := h.Get(HeaderReplayFirstFailure); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		errs = append(errs, err)
		rp.FirstFailure = t
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dlq: signed replay headers do not parse: %w", err)
	}
	return rp, nil
}

// ReplayMsgID is the Nats-Msg-Id of the replay of entry r of a dead-letter
// stream created at created: "ksync-replay-" and a digest of the stream's
// name and creation time, the entry's id and time, and its content (the
// original event's identity, workflow, items, failure times, subject and
// payload). Replaying the same entry twice within the duplicate window of
// the stream it goes to stores it once; an entry of a recreated stream, or
// another entry, never shares the id.
func ReplayMsgID(stream string, created time.Time, r Record) string {
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.AppendUvarint(nil, uint64(len(s))))
		h.Write([]byte(s))
	}
	times := func(ts ...time.Time) {
		for _, t := range ts {
			field(strconv.FormatInt(t.UnixNano(), 10))
		}
	}
	field(stream)
	times(created)
	field(strconv.FormatUint(r.ID, 10))
	times(r.Time, r.FirstFailure, r.LastFailure)
	for _, s := range []string{r.Workflow, r.MsgID, r.EventKey, strconv.FormatUint(r.StreamSeq, 10), FormatItems(r.Items), r.Subject, r.Run} {
		field(s)
	}
	sum := sha256.Sum256(r.Payload)
	h.Write(sum[:])
	return "ksync-replay-" + hex.EncodeToString(h.Sum(nil))[:32]
}
