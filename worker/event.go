package worker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/kustomer-sync/kustomer-sync/dlq"
)

// decodeEvent parses an event payload into the trigger a workflow maps from.
// Its errors say, for a person, why the event can never be processed.
func decodeEvent(data []byte, maxBytes int) (map[string]any, error) {
	if len(data) > maxBytes {
		return nil, fmt.Errorf("worker: event is %d bytes, above the limit of %d bytes (--max-event-bytes)", len(data), maxBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("worker: event is empty; want a JSON object")
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("worker: event is not valid UTF-8 text; want a JSON object")
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("worker: event is not valid JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("worker: event is a JSON %s, not an object", jsonKind(v))
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

// replayIndexes returns the Loop indexes a replayed event is limited to, or
// all of 0..n-1 for a normal event.
func replayIndexes(h nats.Header, n int) ([]int, error) {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	text := h.Get(dlq.HeaderReplayItems)
	if strings.TrimSpace(text) == "" {
		return all, nil
	}
	idx, err := dlq.ParseItems(text)
	if err != nil {
		return nil, fmt.Errorf("worker: header %s: %w", dlq.HeaderReplayItems, err)
	}
	out := make([]int, 0, len(idx))
	for _, i := range idx {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("worker: header %s names item %d, but the event has %d items", dlq.HeaderReplayItems, i, n)
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// eventKey is the base of the default idempotency key of an event's items:
// its Nats-Msg-Id, else its stream and sequence. A replay carries the
// original's, so a replayed item has the key it had the first time.
func eventKey(h nats.Header, stream string, seq uint64) string {
	if id := h.Get(dlq.HeaderMsgID); id != "" {
		return id
	}
	if seq := h.Get(dlq.HeaderStreamSeq); seq != "" {
		return stream + ":" + seq
	}
	if id := h.Get(nats.MsgIdHdr); id != "" {
		return id
	}
	return stream + ":" + strconv.FormatUint(seq, 10)
}
