package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// dlqFilterFlags are the filters every dlq subcommand shares.
type dlqFilterFlags struct {
	workflow string
	class    string
	since    string
	grep     string
	all      bool
}

func (f *dlqFilterFlags) register(cmd *cobra.Command, withAll bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.workflow, "workflow", "", "only entries of this workflow")
	fl.StringVar(&f.class, "class", "", "only entries of this class: "+classList())
	fl.StringVar(&f.since, "since", "", "only entries dead-lettered since a duration ago (30m, 24h, 7d) or a time (RFC 3339 or 2006-01-02)")
	fl.StringVar(&f.grep, "grep", "", "only entries whose error or payload contains this text")
	if withAll {
		fl.BoolVar(&f.all, "all", false, "every entry (required when no ID and no filter is given)")
	}
}

// filter turns the flags and ID arguments into a dlq.Filter; a mistake is a
// usageError.
func (f *dlqFilterFlags) filter(args []string, now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{Workflow: f.workflow, Grep: f.grep, All: f.all}
	if f.class != "" {
		c, err := outcome.ParseFailure(f.class)
		if err != nil {
			return out, usageError{fmt.Errorf("--class %q: want one of %s", f.class, classList())}
		}
		out.Class = c
	}
	if f.since != "" {
		t, err := parseSince(f.since, now)
		if err != nil {
			return out, usageError{err}
		}
		out.Since = t
	}
	for _, arg := range args {
		id, err := strconv.ParseUint(arg, 10, 64)
		if err != nil || id == 0 {
			return out, usageError{fmt.Errorf("entry ID %q: want a positive number (see 'kustomer-sync dlq list')", arg)}
		}
		out.IDs = append(out.IDs, id)
	}
	if f.all && (len(args) > 0 || f.workflow != "" || f.class != "" || f.since != "" || f.grep != "") {
		return out, usageError{errors.New("--all selects every entry: give it alone, without IDs or filters")}
	}
	return out, nil
}

func (f *dlqFilterFlags) selects(args []string) bool {
	return f.all || len(args) > 0 || f.workflow != "" || f.class != "" || f.since != "" || f.grep != ""
}

func classList() string {
	s := make([]string, len(outcome.Failures))
	for i, c := range outcome.Failures {
		s[i] = c.String()
	}
	return strings.Join(s, ", ")
}

// parseSince reads "24h", "7d", "90m" as that long before now, or an RFC 3339
// time, or a date.
func parseSince(s string, now time.Time) (time.Time, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (30m, 24h, 7d) or a time (2006-01-02 or RFC 3339)", s)
}

func (a *app) dlqCommand() *cobra.Command {
	var stream string
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, inspect, replay and purge dead letters",
		Long: `Dead letters are events (or Loop items of events) the worker could not turn into customers:
poison events, mapping and validation errors, permanent Kustomer errors, items whose retries ran
out, and events JetStream stopped redelivering. Each entry keeps the original payload byte for byte
and says why it is there (error, class, attempts, original subject and sequence, failed items).

Fix the cause (a mapping, a credential, the data), then replay: the payload is republished to its
original subject, limited to the failed items, and goes through the current configuration.
Customers created before are not created again.

Classes: ` + classList() + `.`,
		Example: `  kustomer-sync dlq list --workflow signup --since 24h
  kustomer-sync dlq show 42
  kustomer-sync dlq replay 42 43
  kustomer-sync dlq replay --class exhausted --rate 5
  kustomer-sync dlq purge --class invalid_event --yes
  kustomer-sync dlq stats`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&stream, "stream", dlq.StreamDefault, "dead-letter stream")
	open := func(ctx context.Context) (*dlq.Store, func(), error) {
		nc, js, err := a.connect(ctx)
		if err != nil {
			return nil, nil, err
		}
		store, err := dlq.OpenStore(ctx, js, stream)
		if err != nil {
			nc.Close()
			return nil, nil, a.missingStream(err, stream, "no dead letters yet")
		}
		return store, nc.Close, nil
	}
	cmd.AddCommand(
		a.dlqListCommand(open),
		a.dlqShowCommand(open),
		a.dlqReplayCommand(open),
		a.dlqPurgeCommand(open),
		a.dlqStatsCommand(open),
	)
	return cmd
}

type openStore func(context.Context) (*dlq.Store, func(), error)

// withStore parses the filter flags (and ID arguments), opens the store and
// runs fn with both.
func (f *dlqFilterFlags) withStore(ctx context.Context, open openStore, args []string, fn func(*dlq.Store, dlq.Filter) error) error {
	filter, err := f.filter(args, time.Now())
	if err != nil {
		return err
	}
	store, done, err := open(ctx)
	if err != nil {
		return err
	}
	defer done()
	return fn(store, filter)
}

func (a *app) dlqListCommand(open openStore) *cobra.Command {
	var f dlqFilterFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters (oldest first)",
		Long: `List dead-letter entries as a table: id, workflow, class, failed Loop items (as indexes: #0,
#3-5; "all" for the whole event; a long list is cut and counted), attempts, error (truncated) and
age. Filters combine. --json prints every field, with the payload and every item.`,
		Example: `  kustomer-sync dlq list
  kustomer-sync dlq list --workflow signup --class permanent --since 2h
  kustomer-sync dlq list --grep jane@example.com --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withStore(cmd.Context(), open, nil, func(store *dlq.Store, filter dlq.Filter) error {
				entries, err := store.List(cmd.Context(), filter)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, dlqViews(entries))
				}
				if len(entries) == 0 {
					_, err := fmt.Fprintf(a.stdout, "No dead letters in %s%s.\n", store.Name(), filterSuffix(f))
					return err
				}
				return writeDLQTable(a.stdout, entries, time.Now())
			})
		},
	}
	f.register(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func filterSuffix(f dlqFilterFlags) string {
	if f.workflow == "" && f.class == "" && f.since == "" && f.grep == "" {
		return ""
	}
	return " matching the filter"
}

func writeDLQTable(w io.Writer, entries []dlq.Record, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tCLASS\tFAILED ITEMS\tATTEMPTS\tERROR\tAGE")
	for _, r := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, orDash(r.Workflow), orDash(r.Class.String()),
			itemsLabel(r.Items, 24), r.Attempts, clip(r.Error, 60), age(now.Sub(r.Time)))
	}
	return tw.Flush()
}

// itemsLabel shows failed Loop items as indexes, never as a count: "#0",
// "#0,#3-5"; "all" for the whole event. Beyond width bytes (0: no limit) the
// list is cut after an item and the total given: "#0,#2,… (5000 items)".
func itemsLabel(items []int, width int) string {
	if len(items) == 0 {
		return "all"
	}
	s := "#" + strings.ReplaceAll(dlq.FormatItems(items), ",", ",#")
	if width <= 0 || len(s) <= width {
		return s
	}
	cut := strings.LastIndexByte(s[:width], ',')
	if cut <= 0 {
		cut = strings.IndexByte(s, ',')
	}
	return s[:cut] + ",… (" + strconv.Itoa(len(items)) + " items)"
}

func (a *app) dlqShowCommand(open openStore) *cobra.Command {
	var asJSON, payload bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter: why it is there and its payload",
		Long: `Show one dead letter: why it is there, its headers, its error and its payload (indented when
it is JSON). An entry too large for one message keeps its payload and item list in the
KSYNC_PAYLOADS object store; show reads them back. --payload prints the payload alone, byte for byte.`,
		Example: `  kustomer-sync dlq show 42
  kustomer-sync dlq show 42 --json | jq .payload
  kustomer-sync dlq show 42 --payload > event.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || id == 0 {
				return usageError{fmt.Errorf("entry ID %q: want a positive number (see 'kustomer-sync dlq list')", args[0])}
			}
			store, done, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			r, err := store.Get(cmd.Context(), id)
			if err != nil {
				return err
			}
			switch {
			case payload:
				_, err := a.stdout.Write(r.Payload)
				return err
			case asJSON:
				return writeJSON(a.stdout, dlqView(r))
			}
			return writeDLQEntry(a.stdout, r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&payload, "payload", false, "print only the payload, byte for byte")
	cmd.MarkFlagsMutuallyExclusive("json", "payload")
	return cmd
}

func writeDLQEntry(w io.Writer, r dlq.Record) error {
	fields := newFieldList(w)
	row := fields.row
	row("Entry", strconv.FormatUint(r.ID, 10))
	row("Dead-lettered", r.Time.Local().Format(time.RFC3339)+" ("+age(time.Since(r.Time))+" ago)")
	row("Workflow", r.Workflow)
	row("Class", r.Class.String())
	row("Attempts", strconv.Itoa(r.Attempts))
	items := "all (the whole event)"
	if len(r.Items) > 0 {
		items = fmt.Sprintf("%s (%d %s)", itemsLabel(r.Items, 0), len(r.Items), plural(len(r.Items), "item", "items"))
	}
	row("Failed items", items)
	row("Subject", r.Subject)
	if r.StreamSeq != 0 {
		row("Stream seq", strconv.FormatUint(r.StreamSeq, 10))
	}
	row("Msg ID", r.MsgID)
	if !r.FirstFailure.IsZero() {
		row("First failure", r.FirstFailure.Local().Format(time.RFC3339Nano))
	}
	if !r.LastFailure.IsZero() {
		row("Last failure", r.LastFailure.Local().Format(time.RFC3339Nano))
	}
	if r.StatusCode != 0 {
		row("Kustomer status", strconv.Itoa(r.StatusCode))
	}
	row("Kustomer code", r.Code)
	row("Run", r.Run)
	row("Trace", r.TraceID)
	if r.ReplayedFrom != 0 {
		row("Replay of", fmt.Sprintf("entry %d (replay %d of the event; %d attempts before it)", r.ReplayedFrom, r.Replays, r.PriorAttempts))
	}
	row("Original run", r.OriginalRun)
	if err := fields.flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nHeaders:\n")
	h := r.Header()
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(h[k], ", "))
	}
	fmt.Fprintf(w, "\nError:\n  %s\n\nPayload (%d bytes):\n", orDash(r.Error), len(r.Payload))
	_, err := fmt.Fprintln(w, prettyPayload(r.Payload))
	return err
}

// prettyPayload indents JSON, and shows anything else as a quoted string so
// control bytes cannot mess up the terminal.
func prettyPayload(p []byte) string {
	var buf bytes.Buffer
	if json.Valid(p) && json.Indent(&buf, p, "", "  ") == nil {
		return buf.String()
	}
	return strconv.Quote(string(p))
}

func (a *app) dlqPurgeCommand(open openStore) *cobra.Command {
	var f dlqFilterFlags
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "purge [ID...]",
		Short: "Delete dead letters for good",
		Long: `Delete dead-letter entries by ID, by filter, or --all. Shows how many entries match and asks
for confirmation (y/N) unless --yes is given; without --yes and without a terminal to answer on
(a script, a cron job), it deletes nothing and exits 2. Deleted entries cannot be replayed. An ID the stream
never held is an error. --json prints {"deleted": N, "ids": [...]} and needs --yes.`,
		Example: `  kustomer-sync dlq purge 42
  kustomer-sync dlq purge --class invalid_event --since 7d
  kustomer-sync dlq purge --all --yes --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !f.selects(args) {
				return usageError{errors.New("say what to purge: entry IDs, a filter (--workflow, --class, --since, --grep) or --all")}
			}
			if asJSON && !yes {
				return usageError{errors.New("--json needs --yes: there is no confirmation prompt in JSON mode")}
			}
			return f.withStore(cmd.Context(), open, args, func(store *dlq.Store, filter dlq.Filter) error {
				entries, err := store.List(cmd.Context(), filter)
				if err != nil {
					return err
				}
				// Delete exactly what was counted and confirmed, not what
				// arrived since.
				ids := make([]uint64, len(entries))
				for i, r := range entries {
					ids[i] = r.ID
				}
				if asJSON {
					n := 0
					if len(ids) > 0 {
						if n, err = store.Purge(cmd.Context(), dlq.Filter{IDs: ids}); err != nil {
							return err
						}
					}
					return writeJSON(a.stdout, purgeView{Deleted: n, IDs: ids})
				}
				if len(entries) == 0 {
					_, err := fmt.Fprintln(a.stdout, "Nothing to purge.")
					return err
				}
				if !yes {
					if f, isFile := a.stdin.(*os.File); isFile && !isatty.IsTerminal(f.Fd()) && !isatty.IsCygwinTerminal(f.Fd()) {
						return usageError{fmt.Errorf("dlq purge: %d %s match, and stdin is not a terminal, so there is no one to ask: nothing deleted; add --yes to delete them without asking",
							len(entries), plural(len(entries), "entry", "entries"))}
					}
					ok, err := confirm(a.stdin, a.stdout, fmt.Sprintf("Delete %d dead %s from %s for good? [y/N] ",
						len(entries), plural(len(entries), "letter", "letters"), store.Name()))
					if errors.Is(err, errNoAnswer) {
						fmt.Fprintln(a.stdout)
						return usageError{errors.New("dlq purge: no answer (stdin ended): nothing deleted; add --yes to delete without asking")}
					}
					if err != nil {
						return err
					}
					if !ok {
						_, err := fmt.Fprintln(a.stdout, "Nothing deleted.")
						return err
					}
				}
				n, err := store.Purge(cmd.Context(), dlq.Filter{IDs: ids})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(a.stdout, "Deleted %d dead %s.\n", n, plural(n, "letter", "letters"))
				return err
			})
		},
	}
	f.register(cmd, true)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the outcome as JSON (with --yes)")
	return cmd
}

// purgeView is the JSON outcome of `dlq purge`: how many entries were
// deleted, of the IDs selected (an entry removed meanwhile is not counted).
type purgeView struct {
	Deleted int      `json:"deleted"`
	IDs     []uint64 `json:"ids"`
}

// errNoAnswer is input that ended before any answer: no one is there to
// confirm (a script, a cron job), which is not a "no" but a missing --yes.
var errNoAnswer = errors.New("no answer")

// confirm asks question on out and reads a yes from in; any other answer is
// no. Input that ends (or is absent) before an answer is errNoAnswer.
func confirm(in io.Reader, out io.Writer, question string) (bool, error) {
	if _, err := fmt.Fprint(out, question); err != nil {
		return false, err
	}
	if in == nil {
		return false, errNoAnswer
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read confirmation: %w", err)
	}
	if err != nil && strings.TrimSpace(line) == "" {
		return false, errNoAnswer
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

func (a *app) dlqStatsCommand(open openStore) *cobra.Command {
	var f dlqFilterFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count dead letters by workflow and class",
		Example: `  kustomer-sync dlq stats
  kustomer-sync dlq stats --since 24h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withStore(cmd.Context(), open, nil, func(store *dlq.Store, filter dlq.Filter) error {
				stats, err := store.Stats(cmd.Context(), filter)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, stats)
				}
				if len(stats) == 0 {
					_, err := fmt.Fprintf(a.stdout, "No dead letters in %s%s.\n", store.Name(), filterSuffix(f))
					return err
				}
				return writeStats(a.stdout, stats)
			})
		},
	}
	f.register(cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	return cmd
}

func writeStats(w io.Writer, stats map[string]map[outcome.Outcome]int) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"WORKFLOW"}
	for _, c := range outcome.Failures {
		head = append(head, strings.ToUpper(c.String()))
	}
	fmt.Fprintln(tw, strings.Join(append(head, "TOTAL"), "\t")+"\t")
	totals := map[outcome.Outcome]int{}
	grand := 0
	for _, wf := range slices.Sorted(maps.Keys(stats)) {
		row := []string{orDash(wf)}
		sum := 0
		for _, c := range outcome.Failures {
			n := stats[wf][c]
			row = append(row, strconv.Itoa(n))
			sum += n
			totals[c] += n
		}
		// Entries whose class header is missing or unknown still count.
		for c, n := range stats[wf] {
			if !c.Failed() {
				sum += n
			}
		}
		grand += sum
		fmt.Fprintln(tw, strings.Join(append(row, strconv.Itoa(sum)), "\t")+"\t")
	}
	if len(stats) > 1 {
		row := []string{"total"}
		for _, c := range outcome.Failures {
			row = append(row, strconv.Itoa(totals[c]))
		}
		fmt.Fprintln(tw, strings.Join(append(row, strconv.Itoa(grand)), "\t")+"\t")
	}
	return tw.Flush()
}

// dlqEntryView is the JSON form of a dead-letter entry: snake_case, the
// payload inline when it is JSON, else as a string.
type dlqEntryView struct {
	ID            uint64          `json:"id"`
	Time          time.Time       `json:"time"`
	Workflow      string          `json:"workflow"`
	Class         outcome.Outcome `json:"class"`
	Error         string          `json:"error"`
	Attempts      int             `json:"attempts"`
	Subject       string          `json:"subject"`
	StreamSeq     uint64          `json:"stream_seq,omitempty"`
	MsgID         string          `json:"msg_id,omitempty"`
	Items         []int           `json:"items,omitempty"`
	FirstFailure  *time.Time      `json:"first_failure,omitempty"`
	LastFailure   *time.Time      `json:"last_failure,omitempty"`
	StatusCode    int             `json:"status_code,omitempty"`
	Code          string          `json:"code,omitempty"`
	Run           string          `json:"run,omitempty"`
	ReplayedFrom  uint64          `json:"replayed_from,omitempty"`
	Replays       int             `json:"replays,omitempty"`
	PriorAttempts int             `json:"prior_attempts,omitempty"`
	OriginalRun   string          `json:"original_run,omitempty"`
	Object        string          `json:"object,omitempty"` // in KSYNC_PAYLOADS: what did not fit in the entry
	TraceID       string          `json:"trace_id,omitempty"`
	Payload       json.RawMessage `json:"payload"`
}

func dlqView(r dlq.Record) dlqEntryView {
	v := dlqEntryView{
		ID: r.ID, Time: r.Time, Workflow: r.Workflow, Class: r.Class, Error: r.Error, Attempts: r.Attempts,
		Subject: r.Subject, StreamSeq: r.StreamSeq, MsgID: r.MsgID, Items: r.Items, StatusCode: r.StatusCode, Code: r.Code,
		Run: r.Run, ReplayedFrom: r.ReplayedFrom, Replays: r.Replays, PriorAttempts: r.PriorAttempts, OriginalRun: r.OriginalRun,
		Object: r.Object, TraceID: r.TraceID,
	}
	if !r.FirstFailure.IsZero() {
		v.FirstFailure = &r.FirstFailure
	}
	if !r.LastFailure.IsZero() {
		v.LastFailure = &r.LastFailure
	}
	if json.Valid(r.Payload) {
		v.Payload = json.RawMessage(r.Payload)
	} else {
		v.Payload, _ = json.Marshal(string(r.Payload))
	}
	return v
}

func dlqViews(rs []dlq.Record) []dlqEntryView {
	out := make([]dlqEntryView, len(rs))
	for i, r := range rs {
		out[i] = dlqView(r)
	}
	return out
}
