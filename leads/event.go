package leads

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/eventid"
)

// DecodeEvent parses an event payload into the trigger a workflow maps from.
// Its errors say, for a person, why the event can never be processed.
func DecodeEvent(data []byte, maxBytes int) (map[string]any, error) {
	if len(data) > maxBytes {
		return nil, fmt.Errorf("leads: event is %d bytes, above the limit of %d bytes (--max-event-bytes)", len(data), maxBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("leads: event is empty; want a JSON object")
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("leads: event is not valid UTF-8 text; want a JSON object")
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("leads: event is not valid JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("leads: event is a JSON %s, not an object", jsonKind(v))
	}
	return obj, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "array"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// ReplayIndexes returns the Loop indexes a replay is limited to, or all of
// 0..n-1 for a new event (rp nil) or a replay of the whole event.
func ReplayIndexes(rp *dlq.Replay, n int) ([]int, error) {
	if rp == nil || len(rp.Items) == 0 {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	out := make([]int, 0, len(rp.Items))
	for _, i := range rp.Items {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("leads: replay of dead letter %d names item %d, but the event has %d items", rp.Entry, i, n)
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// EventKey is the base of the default idempotency key of an event's items:
// for a verified replay, the original event's; otherwise the event's own
// Nats-Msg-Id (without the digest of the body kustomer-sync's publishers
// add, [eventid.Key], so a changed lead keeps its key), else its stream and
// sequence. Headers a publisher can set (Ksync-*) never choose it: only the
// replay's signature makes rp non-nil.
func EventKey(rp *dlq.Replay, h nats.Header, stream string, seq uint64) string {
	if rp != nil && rp.EventKey != "" {
		return rp.EventKey
	}
	if id := h.Get(nats.MsgIdHdr); id != "" {
		return eventid.Key(id)
	}
	return stream + ":" + strconv.FormatUint(seq, 10)
}

// EventID is the event's identity for people: the original Nats-Msg-Id of a
// verified replay, else its own.
func EventID(rp *dlq.Replay, h nats.Header) string {
	if rp != nil {
		return rp.EventID
	}
	return h.Get(nats.MsgIdHdr)
}

// EventRecord is the dead-letter record of the event on subject at seq,
// without its failure: the original identity, the replay's history, the
// payload byte for byte.
func EventRecord(rp *dlq.Replay, subject, stream string, seq uint64, h nats.Header, payload []byte) dlq.Record {
	r := dlq.Record{
		Subject:   subject,
		StreamSeq: seq,
		MsgID:     EventID(rp, h),
		EventKey:  EventKey(rp, h, stream, seq),
		Payload:   payload,
	}
	if rp != nil {
		r.Workflow = rp.Workflow
		r.Items = rp.Items
	}
	return r.ApplyReplay(rp)
}
