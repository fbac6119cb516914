package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/worker"
)

// publishSubjectDefault is where `publish` sends events unless told otherwise.
const publishSubjectDefault = "leads.new"

type publishFlags struct {
	subject string
	format  string
	idField string
	timeout time.Duration
	asJSON  bool
}

func (a *app) publishCommand() *cobra.Command {
	var f publishFlags
	cmd := &cobra.Command{
		Use:   "publish [FILE]",
		Short: "Publish lead events from JSON, JSONL or CSV (a file or stdin)",
		Long: `Publish one event per record to the leads stream. Records come from FILE or, without it
or with "-", from stdin: a JSON object, a JSON array of objects, JSON lines, or CSV with a header
row (--format csv, or a .csv file; dotted headers such as "address.city" make nested objects,
empty cells are left out).

Each event gets a Nats-Msg-Id: the record's --id-field when it has one, else a hash of its
content, so publishing the same file twice does not create duplicate events (within the
stream's de-duplication window). A progress bar shows on a terminal.`,
		Example: `  kustomer-sync publish testdata/leads.jsonl
  echo '{"id":"l-1","name":"Jane Doe","emails":"jane@example.com"}' | kustomer-sync publish
  kustomer-sync publish --subject leads.shop --format csv leads.csv
  nats pub leads.web '{"name":"Jane Doe"}' -H Nats-Msg-Id:l-1   # plain nats works too`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "-"
			if len(args) == 1 {
				name = args[0]
			}
			if err := checkFlags(cmd, positiveDuration("timeout")); err != nil {
				return err
			}
			return a.publish(cmd.Context(), name, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.subject, "subject", "s", publishSubjectDefault, "subject to publish to (must be in the leads stream)")
	fl.StringVar(&f.format, "format", "auto", "input format: auto, json, jsonl or csv (auto: csv for .csv files, JSON otherwise)")
	fl.StringVar(&f.idField, "id-field", "id", "record field used as Nats-Msg-Id; records without it get a content hash")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for JetStream to acknowledge all events")
	fl.BoolVar(&f.asJSON, "json", false, `print the result as JSON: {"subject", "published", "duplicates", "warning"}`)
	return cmd
}

// record is one event read from the input, with where it came from.
type record struct {
	line int
	data []byte
	id   string
}

func (a *app) publish(ctx context.Context, name string, f publishFlags) error {
	var in io.Reader = a.stdin
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	recs, err := readRecords(in, formatFor(name, f.format), f.idField)
	if err != nil {
		return fmt.Errorf("%s: %w", displayName(name), err)
	}
	if len(recs) == 0 {
		return fmt.Errorf("%s: no records", displayName(name))
	}
	nc, js, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := publishRecords(ctx, js, f.subject, recs, f.timeout, a.progress(len(recs), "publishing"))
	if err != nil {
		return err
	}
	if res.Warning = consumerWarning(ctx, js, f.subject); res.Warning != "" {
		fmt.Fprintln(a.stderr, "warning: "+res.Warning)
	}
	if f.asJSON {
		return writeJSON(a.stdout, res)
	}
	_, err = fmt.Fprintf(a.stdout, "published %d %s to %s (%d already published before, skipped by de-duplication)\n",
		res.Published, plural(res.Published, "event", "events"), res.Subject, res.Duplicates)
	return err
}

func displayName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

// publishResult is what `publish` reports (--json prints it as it is).
type publishResult struct {
	Subject    string `json:"subject"`
	Published  int    `json:"published"`  // stored as new events
	Duplicates int    `json:"duplicates"` // already stored before: dropped by de-duplication
	// Warning says when no workflow consumes the subject, so the events wait
	// unprocessed; empty otherwise.
	Warning string `json:"warning,omitempty"`
}

// consumerWarning says when no kustomer-sync workflow consumes subject, or
// "" when one does (or when the consumers cannot be read: publishing
// succeeded, and a worker may start later either way).
func consumerWarning(ctx context.Context, js jetstream.JetStream, subject string) string {
	on, err := worker.WorkflowsOn(ctx, js, subject)
	switch {
	case err != nil || len(on.Matching) > 0:
		return ""
	case len(on.Filters) == 0:
		return fmt.Sprintf("no worker consumes stream %s yet: these events wait there. A workflow's consumer created later starts with events published after it (start: new) unless the workflow sets start: all or a start time before now", on.Stream)
	}
	var workflows []string
	for name, filter := range on.Filters {
		workflows = append(workflows, name+" on "+filter)
	}
	slices.Sort(workflows)
	return fmt.Sprintf("no workflow consumes %s (stream %s has %s): these events stay unprocessed. A workflow added for this subject processes them only with start: all or a start time before now",
		subject, on.Stream, strings.Join(workflows, ", "))
}

// publishRecords publishes asynchronously with a bounded window and waits for
// every ack; an event is counted only once JetStream stored it.
func publishRecords(ctx context.Context, js jetstream.JetStream, subject string, recs []record, timeout time.Duration, progress func(int)) (publishResult, error) {
	res := publishResult{Subject: subject}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	const window = 256
	pending := make([]jetstream.PubAckFuture, 0, window)
	pendingRecs := make([]record, 0, window)
	flush := func() error {
		for i, fut := range pending {
			select {
			case ack := <-fut.Ok():
				if ack.Duplicate {
					res.Duplicates++
				} else {
					res.Published++
				}
			case err := <-fut.Err():
				if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
					return fmt.Errorf("publish to %s: no stream captures that subject: start 'kustomer-sync run' once with a workflow on this subject (it creates the LEADS stream on its workflows' subjects), or publish to a subject of your stream with --subject", subject)
				}
				return fmt.Errorf("publish line %d to %s: %w", pendingRecs[i].line, subject, err)
			case <-ctx.Done():
				return fmt.Errorf("publish: no acknowledgement from JetStream within %s (is a stream bound to %s?): %w", timeout, subject, ctx.Err())
			}
			progress(1)
		}
		pending, pendingRecs = pending[:0], pendingRecs[:0]
		return nil
	}
	for _, r := range recs {
		m := nats.NewMsg(subject)
		m.Data = r.data
		m.Header.Set(nats.MsgIdHdr, r.id)
		fut, err := js.PublishMsgAsync(m)
		if err != nil {
			return res, fmt.Errorf("publish line %d: %w", r.line, err)
		}
		pending = append(pending, fut)
		pendingRecs = append(pendingRecs, r)
		if len(pending) == window {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	return res, flush()
}

// formatFor resolves --format auto: CSV for a .csv file, JSON otherwise.
func formatFor(name, format string) string {
	if format == "auto" && strings.EqualFold(filepath.Ext(name), ".csv") {
		return "csv"
	}
	return format
}

// readRecords reads JSON (an object, an array of objects, or JSON lines) or
// CSV. Errors name the line.
func readRecords(r io.Reader, format, idField string) ([]record, error) {
	switch format {
	case "csv":
		return readCSV(r, idField)
	case "auto", "json", "jsonl":
		return readJSON(r, idField)
	default:
		return nil, usageError{fmt.Errorf("--format %q: want auto, json, jsonl or csv", format)}
	}
}

func readJSON(r io.Reader, idField string) ([]record, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var recs []record
	for {
		start := dec.InputOffset()
		start += int64(len(data[start:]) - len(bytes.TrimLeft(data[start:], " \t\r\n")))
		line := lineAt(data, start)
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return recs, nil
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
				rec, err := newRecord(el, line, idField)
				if err != nil {
					return nil, fmt.Errorf("line %d, array item %d: %w", line, i, err)
				}
				recs = append(recs, rec)
			}
			continue
		}
		rec, err := newRecord(trimmed, line, idField)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		recs = append(recs, rec)
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

func newRecord(raw json.RawMessage, line int, idField string) (record, error) {
	var obj map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil || obj == nil {
		return record{}, fmt.Errorf("want a JSON object for each event, got %s", strconv.Quote(clip(string(raw), 40)))
	}
	return record{line: line, data: compactJSON(raw), id: eventID(obj, raw, idField)}, nil
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

func readCSV(r io.Reader, idField string) ([]record, error) {
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
	var recs []record
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return recs, nil
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
		recs = append(recs, record{line: line, data: data, id: eventID(obj, data, idField)})
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

// progress returns a function that advances a progress bar on a terminal,
// and does nothing elsewhere.
func (a *app) progress(total int, what string) func(int) {
	if !isTerminal(a.stderr) {
		return func(int) {}
	}
	bar := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return func(n int) { _ = bar.Add(n) }
}
