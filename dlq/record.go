package dlq

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// Header names of a dead-letter entry, all in one place. The ones marked
// "original" describe the event as it was first consumed.
const (
	HeaderError        = "Ksync-Error"         // error message (one line, secrets redacted)
	HeaderClass        = "Ksync-Class"         // one of [outcome.Failures]: "permanent", "exhausted"...
	HeaderAttempts     = "Ksync-Attempts"      // attempts made, decimal
	HeaderWorkflow     = "Ksync-Workflow"      // workflow name
	HeaderSubject      = "Ksync-Subject"       // original subject
	HeaderStreamSeq    = "Ksync-Stream-Seq"    // original stream sequence, decimal
	HeaderMsgID        = "Ksync-Msg-Id"        // original Nats-Msg-Id
	HeaderItems        = "Ksync-Items"         // failed Loop item indexes, "0,3,5-9"; absent: the whole event (or see HeaderItemsCount)
	HeaderItemsCount   = "Ksync-Items-Count"   // set instead of HeaderItems when the list is too long for a header: how many
	HeaderItemsSummary = "Ksync-Items-Summary" // with HeaderItemsCount: the list's start, for people ("0-99,101,… (5000 items)")
	HeaderObject       = "Ksync-Object"        // the object in the payloads bucket holding what did not fit (items, payload)
	HeaderFirstFailure = "Ksync-First-Failure" // RFC 3339 with nanoseconds
	HeaderLastFailure  = "Ksync-Last-Failure"  // RFC 3339 with nanoseconds
	HeaderStatusCode   = "Ksync-Status-Code"   // Kustomer HTTP status, decimal
	HeaderKustomerCode = "Ksync-Kustomer-Code" // Kustomer error code ("badparam")

	HeaderEventKey = "Ksync-Event-Key" // base of the items' idempotency keys
	HeaderRun      = "Ksync-Run-Id"    // the run that dead-lettered the event

	// A dead letter of a replayed event says so, with the history.
	HeaderReplayedFrom  = "Ksync-Replayed-From"  // the entry the event was replayed from, decimal
	HeaderReplays       = "Ksync-Replays"        // how many times the event was replayed
	HeaderPriorAttempts = "Ksync-Prior-Attempts" // attempts spent before the last replay
	HeaderOriginalRun   = "Ksync-Original-Run"   // the event's first run

	// The span of the event that was dead-lettered, when it was traced.
	HeaderTraceID = "Ksync-Trace-Id" // hex trace id
	HeaderSpanID  = "Ksync-Span-Id"  // hex span id
)

// maxErrorLen bounds HeaderError so a huge error cannot make the entry too
// large to publish.
const maxErrorLen = 4096

// maxItemsLen bounds HeaderItems: a longer list is summarised in the headers
// and kept whole in the entry's object (see [Publish]).
const maxItemsLen = 1024

// MaxValueLen bounds the header values of a dead letter that come from
// outside (the original subject and Nats-Msg-Id, which a publisher chose,
// the event key derived from them, Kustomer's error code): a longer value is
// written as its digest ([BoundedValue]) and kept whole in the entry's
// object, so a dead letter's headers stay far below the 64 KiB JetStream
// accepts whatever the event carried.
const MaxValueLen = 1024

// BoundedValue is s as a dead letter's header holds it: s itself when it
// has at most [MaxValueLen] bytes, else "sha256:" and the hex SHA-256 of s,
// 71 bytes, stable and as unique as s. It is its own fixed point: a value
// bounded once is kept as it is.
func BoundedValue(s string) string {
	if len(s) <= MaxValueLen {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Record is one dead-letter entry: the original event and why it failed.
// The zero value is an empty record; ID and Time are set only when a record
// is read back from the stream. Subject, MsgID, EventKey and Code may be of
// any length: the entry's headers hold the [BoundedValue] of a longer one,
// its object the whole, and a record read through a [Store] is whole.
type Record struct {
	ID           uint64 // sequence in the dead-letter stream (set when read)
	Workflow     string
	Class        outcome.Outcome // why: one of [outcome.Failures]
	Error        string
	Attempts     int
	Subject      string // original subject
	StreamSeq    uint64 // original stream sequence
	MsgID        string // original Nats-Msg-Id (set by its publisher: any length)
	Items        []int  // failed Loop item indexes (empty: the whole event); complete, even when the header holds a summary
	FirstFailure time.Time
	LastFailure  time.Time
	StatusCode   int       // Kustomer's HTTP status, 0 if none; set by whoever knows the error (the worker)
	Code         string    // Kustomer's error code ("badparam"), if any; set alike
	Payload      []byte    // original event payload, byte for byte, read back from Object if it is there
	Time         time.Time // when it was dead-lettered (set when read)

	EventKey string // base of the items' idempotency keys; a replay keeps it
	Run      string // the run that dead-lettered the event

	// Set when the dead-lettered event was itself a replay.
	ReplayedFrom  uint64 // the entry it was replayed from
	Replays       int    // how many times the event was replayed
	PriorAttempts int    // attempts spent before the last replay; Attempts are this run's
	OriginalRun   string // the event's first run

	// Object names the object in the payloads bucket ([PayloadsBucket])
	// that holds what did not fit in the entry: the complete item list, the
	// payload. Set by [Publish] when needed, and when read.
	Object string

	// TraceID and SpanID name the span of the event that was dead-lettered
	// (hex), when it was traced; a replay's span links to it.
	TraceID, SpanID string

	// incomplete is why Object could not be read back, for a record listed
	// anyway; such a record is not replayed.
	incomplete error
}

// ApplyReplay fills r's history from the replay rp that failed again: the
// entry it came from, the replays so far, the attempts spent before, the
// first run and the first failure.
func (r Record) ApplyReplay(rp *Replay) Record {
	if rp == nil {
		return r
	}
	r.ReplayedFrom = rp.Entry
	r.Replays = rp.Count
	r.PriorAttempts = rp.Attempts
	r.OriginalRun = rp.OriginalRun
	if !rp.FirstFailure.IsZero() && (r.FirstFailure.IsZero() || rp.FirstFailure.Before(r.FirstFailure)) {
		r.FirstFailure = rp.FirstFailure
	}
	return r
}

// Header returns the entry's headers. Empty fields are left out. The error
// is flattened to one line, truncated to 4 KiB and stripped of anything that
// looks like a bearer token or an API key. The subject, message id, event
// key and Kustomer code are the [BoundedValue]s of r's: [Publish] keeps a
// longer one whole in the entry's object. So every header value is bounded,
// and the whole stays below 16 KiB.
func (r Record) Header() nats.Header {
	h := nats.Header{}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(HeaderError, cleanError(r.Error))
	set(HeaderClass, r.Class.String())
	if r.Attempts != 0 {
		set(HeaderAttempts, strconv.Itoa(r.Attempts))
	}
	set(HeaderWorkflow, headerSafe(r.Workflow))
	set(HeaderSubject, headerSafe(BoundedValue(r.Subject)))
	if r.StreamSeq != 0 {
		set(HeaderStreamSeq, strconv.FormatUint(r.StreamSeq, 10))
	}
	set(HeaderMsgID, headerSafe(BoundedValue(r.MsgID)))
	if items := FormatItems(r.Items); len(items) <= maxItemsLen {
		set(HeaderItems, items)
	} else {
		set(HeaderItemsCount, strconv.Itoa(len(r.Items)))
		set(HeaderItemsSummary, summariseItems(items, len(r.Items)))
	}
	if !r.FirstFailure.IsZero() {
		set(HeaderFirstFailure, r.FirstFailure.UTC().Format(time.RFC3339Nano))
	}
	if !r.LastFailure.IsZero() {
		set(HeaderLastFailure, r.LastFailure.UTC().Format(time.RFC3339Nano))
	}
	if r.StatusCode != 0 {
		set(HeaderStatusCode, strconv.Itoa(r.StatusCode))
	}
	set(HeaderKustomerCode, headerSafe(BoundedValue(r.Code)))
	set(HeaderEventKey, headerSafe(BoundedValue(r.EventKey)))
	set(HeaderRun, headerSafe(r.Run))
	if r.ReplayedFrom != 0 {
		set(HeaderReplayedFrom, strconv.FormatUint(r.ReplayedFrom, 10))
	}
	if r.Replays != 0 {
		set(HeaderReplays, strconv.Itoa(r.Replays))
	}
	if r.PriorAttempts != 0 {
		set(HeaderPriorAttempts, strconv.Itoa(r.PriorAttempts))
	}
	set(HeaderOriginalRun, headerSafe(r.OriginalRun))
	set(HeaderObject, headerSafe(r.Object))
	set(HeaderTraceID, traceHex(r.TraceID, 32))
	set(HeaderSpanID, traceHex(r.SpanID, 16))
	return h
}

// summariseItems is the start of a long item list, cut at an index, and the
// count: "0-99,101,… (5000 items)".
func summariseItems(items string, n int) string {
	const keep = 128
	if i := strings.LastIndexByte(items[:keep], ','); i > 0 {
		items = items[:i]
	} else {
		items = items[:keep]
	}
	return fmt.Sprintf("%s,… (%d items)", items, n)
}

// RecordFromMsg reads a dead-letter entry. It is lenient: a header that is
// missing leaves its field zero, and a header that cannot be parsed leaves
// its field zero and is reported in the returned error, alongside a record
// holding everything else (ID, payload...), so tools can still show the entry.
// What the entry keeps in its object (Object) is not read: a [Store] reads
// it.
func RecordFromMsg(m *jetstream.RawStreamMsg) (Record, error) {
	if m == nil {
		return Record{}, errors.New("dlq: nil message")
	}
	h := m.Header
	r := Record{
		ID:       m.Sequence,
		Time:     m.Time,
		Payload:  m.Data,
		Workflow: h.Get(HeaderWorkflow),
		Error:    h.Get(HeaderError),
		Subject:  h.Get(HeaderSubject),
		MsgID:    h.Get(HeaderMsgID),
		Code:     h.Get(HeaderKustomerCode),
		EventKey: h.Get(HeaderEventKey),
		Run:      h.Get(HeaderRun),

		OriginalRun: h.Get(HeaderOriginalRun),
		Object:      h.Get(HeaderObject),
		TraceID:     traceHex(h.Get(HeaderTraceID), 32),
		SpanID:      traceHex(h.Get(HeaderSpanID), 16),
	}
	var errs []error
	bad := func(name string, err error) {
		errs = append(errs, fmt.Errorf("dlq: entry %d: header %s: %w", m.Sequence, name, err))
	}
	if v := h.Get(HeaderClass); v != "" {
		c, err := outcome.ParseFailure(v)
		if err != nil {
			bad(HeaderClass, err)
		}
		r.Class = c
	}
	if v := h.Get(HeaderAttempts); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			bad(HeaderAttempts, err)
		}
		r.Attempts = n
	}
	if v := h.Get(HeaderStreamSeq); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			bad(HeaderStreamSeq, err)
		}
		r.StreamSeq = n
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{HeaderStatusCode, &r.StatusCode}, {HeaderReplays, &r.Replays}, {HeaderPriorAttempts, &r.PriorAttempts}} {
		if v := h.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				bad(f.name, err)
			}
			*f.dst = n
		}
	}
	if v := h.Get(HeaderReplayedFrom); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			bad(HeaderReplayedFrom, err)
		}
		r.ReplayedFrom = n
	}
	items, err := ParseItems(h.Get(HeaderItems))
	if err != nil {
		bad(HeaderItems, err)
	}
	r.Items = items
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{HeaderFirstFailure, &r.FirstFailure}, {HeaderLastFailure, &r.LastFailure}} {
		if v := h.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				bad(f.name, err)
			}
			*f.dst = t
		}
	}
	return r, errors.Join(errs...)
}

// maxParsedItems bounds how many indexes [ParseItems] expands ranges to, so
// a header "0-999999999" cannot exhaust memory.
const maxParsedItems = 1 << 20

// ParseItems parses a list of item indexes and ranges such as "0,3,5-9"
// (spaces allowed). The empty string is no items (nil). Indexes must be
// non-negative and a range ascending; the result is sorted and without
// duplicates, and holds at most about a million indexes.
func ParseItems(h string) ([]int, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return nil, nil
	}
	parts := strings.Split(h, ",")
	items := make([]int, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		lo, hi, isRange := strings.Cut(p, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || a < 0 || b < a {
			return nil, fmt.Errorf("dlq: item index %q: want a non-negative integer or a range such as 5-9", p)
		}
		if len(items)+b-a >= maxParsedItems {
			return nil, fmt.Errorf("dlq: item list: more than %d indexes", maxParsedItems)
		}
		for n := a; n <= b; n++ {
			items = append(items, n)
		}
	}
	slices.Sort(items)
	return slices.Compact(items), nil
}

// FormatItems is the inverse of [ParseItems]: "0,3,7", runs of three or more
// as ranges ("0-9999"), or "" for no items. items must be sorted.
func FormatItems(items []int) string {
	var b strings.Builder
	for i := 0; i < len(items); {
		j := i
		for j+1 < len(items) && items[j+1] == items[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(items[i]))
		switch {
		case j-i >= 2:
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(items[j]))
		case j > i:
			b.WriteByte(',')
			b.WriteString(strconv.Itoa(items[j]))
		}
		i = j + 1
	}
	return b.String()
}

var secretPatterns = []*regexp.Regexp{
	// Authorization header values.
	regexp.MustCompile(`(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}`),
	// JWTs: Kustomer API keys are JWTs.
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`),
}

// cleanError makes an error message fit for a header: one line, bounded,
// no secrets.
func cleanError(s string) string {
	s = secretFree(s)
	if len(s) > maxErrorLen {
		s = strings.ToValidUTF8(s[:maxErrorLen], "") + "…"
	}
	return s
}

// secretFree is s on one line without secrets, at any length.
func secretFree(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllStringFunc(s, func(m string) string {
			if i := strings.IndexAny(m, " \t"); i > 0 && !strings.HasPrefix(m, "eyJ") {
				return m[:i] + " [redacted]"
			}
			return "[redacted]"
		})
	}
	return headerSafe(s)
}

// headerSafe replaces line breaks, which would end a NATS header, by spaces.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// traceHex is s when it is n lowercase hex digits (a trace or span id),
// else "".
func traceHex(s string, n int) string {
	if len(s) != n {
		return ""
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return s
}
