package dlq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/overflow"
	"github.com/kustomer-sync/kustomer-sync/scan"
)

// PayloadsBucket is the JetStream Object Store bucket that keeps what does
// not fit in a dead-letter entry or a replayed event: the complete list of
// failed items, the original payload when it and the entry's headers exceed
// the server's max_payload. [EnsureStream] creates it beside the stream,
// with the stream's replicas and byte limit and no age limit: an object
// lives as long as its entry ([Store.Purge] and [Store.Replay] remove it).
const PayloadsBucket = "KSYNC_PAYLOADS"

// Object name prefixes: an entry's object, a replayed event's object.
const (
	entryObjectPrefix  = "dlq."
	replayObjectPrefix = "replay."
)

// content is an object's content: what did not fit in a message.
type content struct {
	Items []int  `json:"items,omitempty"`
	Error string `json:"error,omitempty"` // the error before it was cut to maxErrorLen
	// Payload is the original payload, byte for byte; nil when it is the
	// message's body.
	Payload []byte `json:"payload,omitempty"`

	// The values longer than MaxValueLen whose headers hold their
	// BoundedValue; empty when the header holds the value.
	Subject  string `json:"subject,omitempty"`
	MsgID    string `json:"msg_id,omitempty"`
	EventKey string `json:"event_key,omitempty"`
	Code     string `json:"code,omitempty"`
}

// longValues is the content of r's values too long for a header, and
// whether there is any.
func longValues(r Record) (content, bool) {
	var o content
	long := false
	for _, f := range []struct {
		v   string
		dst *string
	}{{r.Subject, &o.Subject}, {r.MsgID, &o.MsgID}, {r.EventKey, &o.EventKey}, {r.Code, &o.Code}} {
		if BoundedValue(f.v) != f.v {
			*f.dst, long = f.v, true
		}
	}
	return o, long
}

// ensurePayloads creates the payloads bucket, or updates it to cfg's
// replicas and byte limit.
func ensurePayloads(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	err := overflow.Ensure(ctx, js, overflow.Bucket{
		Name:        PayloadsBucket,
		Description: "kustomer-sync: dead-letter payloads and item lists too large for one message",
		Limits:      overflow.Limits{MaxBytes: cfg.MaxBytes, Replicas: cfg.Replicas},
	})
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return nil
}

// putObject stores o under name, in chunks the server accepts. Its error
// is for the caller to wrap in a message of its own, "dlq: ...".
func putObject(ctx context.Context, js jetstream.JetStream, name string, o content) error {
	data, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("encode object %s: %w", name, err)
	}
	return overflow.Put(ctx, js, PayloadsBucket, name, data)
}

// getObject reads object name back. Its error is for the caller to wrap in
// a message of its own, "dlq: ...".
func getObject(ctx context.Context, js jetstream.JetStream, name string) (content, error) {
	var o content
	data, err := overflow.Get(ctx, js, PayloadsBucket, name)
	if err != nil {
		return o, err
	}
	if err := json.Unmarshal(data, &o); err != nil {
		return o, fmt.Errorf("object %s in %s: %w", name, PayloadsBucket, err)
	}
	return o, nil
}

// deleteObject removes object name; one already gone is not an error.
func deleteObject(ctx context.Context, js jetstream.JetStream, name string) error {
	if err := overflow.Delete(ctx, js, PayloadsBucket, name); err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	return nil
}

// fitEntry makes msg, the entry of r, storable: when its item list is too
// long for a header, a value too long for a header was bounded (see
// [Record.Header]) or the whole does not fit in one message, the complete
// list, the full error, the whole values and (if needed) the payload go to
// an object, referenced by [HeaderObject], and fitEntry returns its name.
// The object is stored before the entry, so an entry never names a missing
// object. Its name is "dlq.<stream>.<the entry's Nats-Msg-Id>.<random>":
// each publish has its own object, so removing one entry's object never
// takes another's (the same failure dead-lettered again after the duplicate
// window), and [Store.Sweep] knows the stream whose entries may name it.
func fitEntry(ctx context.Context, js jetstream.JetStream, msg *nats.Msg, r Record, msgID string) (string, error) {
	itemsCut := msg.Header.Get(HeaderItemsCount) != ""
	errorCut := cleanError(r.Error) != secretFree(r.Error)
	long, valuesCut := longValues(r)
	if !itemsCut && !valuesCut && overflow.Fits(js, msg) {
		return "", nil
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	stream, err := js.StreamNameBySubject(ctx, msg.Subject)
	if err != nil {
		return "", fmt.Errorf("dlq: no stream captures %s: %w", msg.Subject, err)
	}
	name := entryObjectPrefix + stream + "." + msgID + "." + hex.EncodeToString(rnd[:])
	o := long
	o.Items = r.Items
	if errorCut {
		o.Error = secretFree(r.Error)
	}
	msg.Header.Set(HeaderObject, name)
	if !overflow.Fits(js, msg) {
		o.Payload = r.Payload
		if o.Payload == nil {
			o.Payload = []byte{}
		}
		msg.Data = nil
	}
	if !overflow.Fits(js, msg) {
		// Every header value is bounded: only a tiny max_payload gets here.
		return "", fmt.Errorf("dlq: entry headers of %d bytes do not fit in the server's max_payload of %d", overflow.HeaderSize(msg), overflow.MaxPayload(js))
	}
	if err := putObject(ctx, js, name, o); err != nil {
		return "", fmt.Errorf("dlq: entry for %s: %w", msg.Subject, err)
	}
	return name, nil
}

// readObject completes r, read from the stream, with its object: the item
// list, the full error, the payload. A record whose object cannot be read is
// kept with what the entry holds and marked, so it is listed but not
// replayed; the error is returned too.
func (s *Store) readObject(ctx context.Context, r *Record) error {
	if r.Object == "" {
		return nil
	}
	o, err := getObject(ctx, s.js, r.Object)
	if err != nil {
		r.incomplete = fmt.Errorf("dlq: entry %d: %w (purge the entry, its payload is gone)", r.ID, err)
		return r.incomplete
	}
	if o.Items != nil {
		r.Items = o.Items
	}
	if o.Error != "" {
		r.Error = o.Error
	}
	if o.Payload != nil {
		r.Payload = o.Payload
	}
	for _, f := range []struct {
		v   string
		dst *string
	}{{o.Subject, &r.Subject}, {o.MsgID, &r.MsgID}, {o.EventKey, &r.EventKey}, {o.Code, &r.Code}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	return nil
}

// replayObject makes the replay of r, published under replayID, fit in one
// message when the payload with the signed replay headers, or the item
// list, does not: it stores the payload and items in an object named after
// the replay id (a replay run twice writes the same object), sets rp.Object
// and drops rp.Items (the object has them); the caller signs rp and
// publishes it with an empty body. The worker removes the object once
// the event's outcome is durable. fits reports whether the message fits as
// it is.
func (s *Store) replayObject(ctx context.Context, rp *Replay, r Record, replayID string, fits bool) error {
	if r.incomplete != nil {
		return r.incomplete
	}
	if fits && len(FormatItems(rp.Items)) <= maxItemsLen {
		return nil
	}
	name := replayObjectPrefix + replayID
	payload := r.Payload
	if payload == nil {
		payload = []byte{}
	}
	if err := putObject(ctx, s.js, name, content{Items: rp.Items, Payload: payload}); err != nil {
		return fmt.Errorf("dlq: replay entry %d: %w", r.ID, err)
	}
	rp.Object, rp.Items = name, nil
	return nil
}

// ReplayObject is what a replayed event's object holds.
type ReplayObject struct {
	Items   []int  // the Loop items to run; empty: all
	Payload []byte // the original payload, byte for byte
}

// LoadReplayObject reads the object a replayed event names in
// [HeaderReplayObject]. Only replay objects are read: a name that is not
// one is an error, so a publisher cannot make the worker read (or remove)
// a dead-letter entry's object.
func LoadReplayObject(ctx context.Context, js jetstream.JetStream, name string) (ReplayObject, error) {
	if !strings.HasPrefix(name, replayObjectPrefix) {
		return ReplayObject{}, fmt.Errorf("%w: header %s names %q", ErrNotReplayObject, HeaderReplayObject, name)
	}
	o, err := getObject(ctx, js, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return ReplayObject{}, fmt.Errorf("%w: replay object %s in %s (already processed, or removed)", ErrObjectGone, name, PayloadsBucket)
	}
	if err != nil {
		return ReplayObject{}, fmt.Errorf("dlq: replay object: %w", err)
	}
	return ReplayObject{Items: o.Items, Payload: o.Payload}, nil
}

// DeleteReplayObject removes a replayed event's object once the event's
// outcome is durable. Names that are not replay objects are left alone.
func DeleteReplayObject(ctx context.Context, js jetstream.JetStream, name string) error {
	if !strings.HasPrefix(name, replayObjectPrefix) {
		return fmt.Errorf("%w: header %s names %q", ErrNotReplayObject, HeaderReplayObject, name)
	}
	return deleteObject(ctx, js, name)
}

// objectOf reads the object name of entry id without reading the object.
func (s *Store) objectOf(ctx context.Context, id uint64) string {
	m, err := s.stream.GetMsg(ctx, id)
	if err != nil {
		return ""
	}
	return m.Header.Get(HeaderObject)
}

// OrphanGrace is how old an entry object must be before [Store.Sweep]
// removes it for want of an entry naming it: an object is stored just
// before its entry is published.
const OrphanGrace = 10 * time.Minute

// Sweep removes the objects stored for entries of this stream that no entry
// names and that are older than grace: those of dead letters whose publish
// failed after their object was stored (the event was then dead-lettered
// again, with an object of its own). It returns how many it removed.
// Objects of other streams sharing the bucket, and objects from before
// objects were named after their stream, are left alone; so are replay
// objects, which the worker removes once it has processed the replayed
// event. [Store.Purge] sweeps with OrphanGrace.
func (s *Store) Sweep(ctx context.Context, grace time.Duration) (int, error) {
	obs, err := overflow.Open(ctx, s.js, PayloadsBucket)
	if err != nil {
		return 0, fmt.Errorf("dlq: %w", err)
	}
	prefix := entryObjectPrefix + s.name + "."
	cutoff := time.Now().Add(-grace)
	var candidates []string
	list, err := obs.List(ctx)
	switch {
	case errors.Is(err, jetstream.ErrNoObjectsFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("dlq: sweep %s: %w", PayloadsBucket, err)
	}
	for _, info := range list {
		if strings.HasPrefix(info.Name, prefix) && info.ModTime.Before(cutoff) {
			candidates = append(candidates, info.Name)
		}
	}
	if len(candidates) == 0 {
		return 0, nil
	}
	named := map[string]bool{}
	err = scan.Stream(ctx, s.stream, scan.Options{}, func(m *jetstream.RawStreamMsg) error {
		if o := m.Header.Get(HeaderObject); o != "" {
			named[o] = true
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("dlq: sweep %s: %w", s.name, err)
	}
	n := 0
	for _, name := range candidates {
		if named[name] {
			continue
		}
		if err := deleteObject(ctx, s.js, name); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
