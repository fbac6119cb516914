package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/subject"
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

Each event gets a Nats-Msg-Id of the subject, the record's --id-field (else a hash of its
content) and a digest of the record ("leads.new:lead-1;sha256=..."), so publishing the same
file twice does not create duplicate events (within the stream's de-duplication window), the
same id on another subject is another event, and a changed record re-sent under its id reaches
the worker, which keeps one customer per id. A progress bar shows on a terminal.`,
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
	fl.StringVar(&f.idField, "id-field", "id", "record field identifying a record in its Nats-Msg-Id; records without it get a content hash")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for JetStream to acknowledge all events")
	fl.BoolVar(&f.asJSON, "json", false, `print the result as JSON: {"subject", "published", "duplicates", "warning"}`)
	return cmd
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
	r := ingest.Reader{Name: displayName(name), Format: ingest.Format(f.format), IDField: f.idField}
	evs, err := r.ReadAll(in)
	if errors.Is(err, ingest.ErrFormat) {
		return usageError{fmt.Errorf("--format %q: want auto, json, jsonl or csv", f.format)}
	}
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return fmt.Errorf("%s: no records", displayName(name))
	}
	nc, js, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, done, err := a.tracePublish(ctx, f.subject)
	if err != nil {
		return err
	}
	defer done()
	p := ingest.Publisher{JS: js, Timeout: f.timeout, Progress: a.progress(len(evs), "publishing")}
	var res publishOutput
	if res.Result, err = p.Publish(ctx, f.subject, evs); err != nil {
		if errors.Is(err, ingest.ErrNoStream) {
			if running := runningOn(ctx, js, f.subject); running != "" {
				return fmt.Errorf("publish to %s: %w, yet %s: it captures it again at its next start or reload (SIGHUP); check that no replica with an older config narrowed the stream", f.subject, ingest.ErrNoStream, running)
			}
		}
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

// displayName names the input in messages; with FormatAuto a name ending in
// .csv reads CSV.
func displayName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

// publishOutput is what `publish` reports (--json prints it as it is).
type publishOutput struct {
	ingest.Result
	// Warning says when no workflow consumes the subject, so the events wait
	// unprocessed; empty otherwise.
	Warning string `json:"warning,omitempty"`
}

// consumerWarning says when no kustomer-sync workflow consumes subject, or
// "" when one does (or when the consumers cannot be read: publishing
// succeeded, and a worker may start later either way).
func consumerWarning(ctx context.Context, js jetstream.JetStream, subject string) string {
	on, err := leads.WorkflowsOn(ctx, js, subject)
	switch {
	case err != nil || len(on.Matching) > 0:
		return ""
	case len(on.Filters) == 0:
		return fmt.Sprintf("no worker consumes stream %s yet: these events wait there. A workflow on this subject processes them once it starts, unless it sets start: new or a start time after now", on.Stream)
	}
	var workflows []string
	for name, filter := range on.Filters {
		workflows = append(workflows, name+" on "+filter)
	}
	slices.Sort(workflows)
	return fmt.Sprintf("no workflow consumes %s (stream %s has %s): these events wait unprocessed. A workflow added for this subject processes them, unless it sets start: new or a start time after now",
		subject, on.Stream, strings.Join(workflows, ", "))
}

// runningOn names the live replicas' workflows whose subject covers subj
// ("replica r1 runs workflow imports on imports.>"), or "" when none does
// (or the replicas cannot be read).
func runningOn(ctx context.Context, js jetstream.JetStream, subj string) string {
	replicas, err := replica.Read(ctx, js, "")
	if err != nil {
		return ""
	}
	var on []string
	for _, r := range replicas {
		for _, w := range r.Workflows {
			if w.Subject != "" && subject.Covers(w.Subject, subj) {
				on = append(on, fmt.Sprintf("replica %s runs workflow %s on %s", r.Replica, w.Workflow, w.Subject))
			}
		}
	}
	return strings.Join(on, ", ")
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
