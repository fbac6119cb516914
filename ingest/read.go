package ingest

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Format is how an input encodes its events.
type Format string

// The formats a [Reader] reads.
const (
	// FormatAuto reads CSV when the input's name ends in .csv, JSON otherwise.
	FormatAuto Format = "auto"
	// FormatJSON reads a JSON object, a JSON array of objects, or several
	// objects (or arrays) one after another, as JSON lines are.
	FormatJSON Format = "json"
	// FormatJSONL is FormatJSON: JSON lines are read the same way.
	FormatJSONL Format = "jsonl"
	// FormatCSV reads a header row and one event per row; dotted headers
	// such as "address.city" make nested objects, empty cells are left out.
	FormatCSV Format = "csv"
)

// Event is one record read from an input: its JSON payload (compact), its
// de-duplication id and the line it started on.
type Event struct {
	Line int
	Data []byte
	// ID identifies the record: its id field when it has a non-empty one,
	// else "sha256-" and a hash of its content with keys sorted, so the same
	// record published twice gets the same id. A [Publisher] makes the
	// Nats-Msg-Id of it, the subject and Data ([eventid.MsgID]).
	ID string
}

// Reader reads events. The zero value reads JSON, gives every event a
// content hash as its id and names no input in its errors.
type Reader struct {
	// Name names the input in errors ("leads.csv", "stdin"); with
	// FormatAuto a name ending in .csv selects CSV.
	Name string
	// Format is FormatAuto when empty.
	Format Format
	// IDField is the record field used as the event id (the `publish`
	// command's default is "id"). Records without it, and every record when
	// it is empty, get a content hash.
	IDField string
}

// ReadAll reads every event of in. Errors start with "ingest:", then the
// Reader's Name, and name the line of the bad record.
func (r Reader) ReadAll(in io.Reader) ([]Event, error) {
	idField := r.IDField
	var (
		evs []Event
		err error
	)
	switch r.format() {
	case FormatCSV:
		evs, err = readCSV(in, idField)
	case FormatAuto, FormatJSON, FormatJSONL:
		evs, err = readJSON(in, idField)
	default:
		return nil, fmt.Errorf("%w %q: want auto, json, jsonl or csv", ErrFormat, r.Format)
	}
	if err != nil {
		if r.Name != "" {
			return nil, fmt.Errorf("ingest: %s: %w", r.Name, err)
		}
		return nil, fmt.Errorf("ingest: %w", err)
	}
	return evs, nil
}

// format resolves FormatAuto: CSV for a .csv name, JSON otherwise.
func (r Reader) format() Format {
	f := cmp.Or(r.Format, FormatAuto)
	if f == FormatAuto && strings.EqualFold(filepath.Ext(r.Name), ".csv") {
		return FormatCSV
	}
	return f
}

func readJSON(r io.Reader, idField string) ([]Event, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var evs []Event
	for {
		start := dec.InputOffset()
		start += int64(len(data[start:]) - len(bytes.TrimLeft(data[start:], " \t\r\n")))
		line := lineAt(data, start)
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return nil, jsonSyntaxError(data, line, err)
		}
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) > 0 && trimmed[0] == '[' {
			var arr []json.RawMessage
			if err := json.Unmarshal(trimmed, &arr); err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			for i, el := range arr {
				ev, err := newEvent(el, line, idField)
				if err != nil {
					return nil, fmt.Errorf("line %d, array item %d: %w", line, i, err)
				}
				evs = append(evs, ev)
			}
			continue
		}
		ev, err := newEvent(trimmed, line, idField)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		evs = append(evs, ev)
	}
}

// jsonSyntaxError names the line of the byte JSON choked on (a syntax
// error's Offset counts that byte, which may itself be a line break), and the
// line the record started on when that is another one.
func jsonSyntaxError(data []byte, recordLine int, err error) error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		line := lineAt(data, syn.Offset-1)
		if line != recordLine {
			return fmt.Errorf("line %d: invalid JSON in the record starting on line %d: %w", line, recordLine, err)
		}
		return fmt.Errorf("line %d: invalid JSON: %w", line, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("line %d: the record starting here is not complete JSON (the input ends inside it)", recordLine)
	default:
		return fmt.Errorf("line %d: %w", recordLine, err)
	}
}

func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}

func newEvent(raw json.RawMessage, line int, idField string) (Event, error) {
	var obj map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil || obj == nil {
		return Event{}, fmt.Errorf("want a JSON object for each event, got %s", strconv.Quote(clip(string(raw), 40)))
	}
	return Event{Line: line, Data: compactJSON(raw), ID: eventID(obj, raw, idField)}, nil
}

// clip shortens s to n runes, on one line, for an error message.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func compactJSON(raw []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return raw
	}
	return buf.Bytes()
}

// eventID is the record's id field, else a hash of its canonical content
// (keys sorted), so the same lead published twice gets the same id.
func eventID(obj map[string]any, raw []byte, idField string) string {
	if idField != "" {
		switch v := obj[idField].(type) {
		case string:
			if s := strings.TrimSpace(v); s != "" {
				return s
			}
		case json.Number:
			return v.String()
		}
	}
	canon, err := json.Marshal(obj)
	if err != nil {
		canon = raw
	}
	sum := sha256.Sum256(canon)
	return "sha256-" + hex.EncodeToString(sum[:16])
}

func readCSV(r io.Reader, idField string) ([]Event, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	for i, h := range header {
		header[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if header[i] == "" {
			return nil, fmt.Errorf("line 1: CSV column %d has no name", i+1)
		}
	}
	var evs []Event
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return nil, err // csv errors name the line
		}
		line, _ := cr.FieldPos(0)
		if len(row) > len(header) {
			return nil, fmt.Errorf("line %d: %d cells, but the header names %d columns", line, len(row), len(header))
		}
		obj := map[string]any{}
		for i, cell := range row {
			if cell = strings.TrimSpace(cell); cell != "" {
				setPath(obj, strings.Split(header[i], "."), cell)
			}
		}
		if len(obj) == 0 {
			continue
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		evs = append(evs, Event{Line: line, Data: data, ID: eventID(obj, data, idField)})
	}
}

func setPath(obj map[string]any, path []string, v string) {
	for _, p := range path[:len(path)-1] {
		next, ok := obj[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			obj[p] = next
		}
		obj = next
	}
	obj[path[len(path)-1]] = v
}
