package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

func (a *app) validateCommand() *cobra.Command {
	var (
		asJSON bool
		stream string
	)
	cmd := &cobra.Command{
		Use:   "validate CONFIG",
		Short: "Check a workflow config file and list its workflows",
		Long: `Parse CONFIG, compile every template and check every setting, exactly as 'run' does at
start-up. Every mistake in the file is listed, each with its file, line and column, and the
command exits 1. On success, list the workflows, and say which overlap (an event on a subject
both match runs in each: a fan-out).

With a NATS URL (--nats-url, NATS_URL or --context), also check the config against the live
leads stream (--stream), as 'run' would: a stream kustomer-sync manages will capture every
workflow's subject, unless another stream already captures one; a stream an operator created
must capture every workflow's subject.

--json prints {"file", "valid", "workflows", "notices", "stream"} on success and {"file",
"valid": false, "errors": [{"file", "line", "column", "message"}]} on failure (still exit 1).`,
		Example: `  kustomer-sync validate testdata/workflows.yaml
  kustomer-sync validate --nats-url nats://nats-1:4222 workflows.yaml
  kustomer-sync validate --json workflows.yaml | jq '.errors[].message'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := mapping.Load(args[0])
			var plan *leads.StreamPlan
			if err == nil && a.natsURL != "" {
				plan, err = a.checkLiveStream(cmd.Context(), stream, cfg)
			}
			if asJSON {
				report := validateReport(args[0], cfg, err)
				if err == nil {
					report.Notices, report.Stream = overlapNotices(cfg), plan
				}
				if jerr := writeJSON(a.stdout, report); jerr != nil {
					return jerr
				}
				return err
			}
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "%s: %d %s, all templates compile\n\n", args[0], len(cfg.Workflows), plural(len(cfg.Workflows), "workflow", "workflows"))
			fmt.Fprintln(w, "NAME\tSUBJECT\tMODE\tMATCH\tLOOP\tCONCURRENCY\tIN FLIGHT\tATTEMPTS\tDEAD LETTERS\tINPUTS")
			for _, wf := range cfg.Workflows {
				loop := "-"
				if wf.HasLoop() {
					loop = wf.LoopTemplate()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", wf.Name, wf.Subject, modeText(wf), matchText(wf), loop, wf.Concurrency,
					wf.MaxInFlight, wf.Retry.MaxAttempts, wf.DeadLetterSubject, strings.Join(wf.Inputs(), ","))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, n := range overlapNotices(cfg) {
				fmt.Fprintln(a.stdout, n)
			}
			if plan != nil {
				fmt.Fprintln(a.stdout, planText(plan))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result (workflows, or every mistake) as JSON")
	cmd.Flags().StringVar(&stream, "stream", leads.StreamDefault, "with a NATS URL: the leads stream to check the config against")
	bindEnv(cmd.Flags(), "stream", "KSYNC_STREAM")
	return cmd
}

// modeText is a workflow's mode as validate shows it: per-item, or bulk
// with its batch size.
func modeText(wf *mapping.Workflow) string {
	if wf.Mode == mapping.ModeBulk {
		return fmt.Sprintf("bulk (%d per request)", wf.BatchSize)
	}
	return wf.Mode
}

// matchText is what a workflow does with an existing customer: "create"
// (no match), or its keys and on_match ("email,phone then update").
func matchText(wf *mapping.Workflow) string {
	if len(wf.Match) == 0 {
		return "- (always create)"
	}
	return strings.Join(wf.Match, ",") + " then " + wf.OnMatch
}

// validateJSON is what `validate --json` prints.
type validateJSON struct {
	File      string            `json:"file"`
	Valid     bool              `json:"valid"`
	Workflows []workflowJSON    `json:"workflows,omitempty"`
	Errors    []configErrorJSON `json:"errors,omitempty"`
	// Notices name the workflows whose subjects overlap (a fan-out).
	Notices []string `json:"notices,omitempty"`
	// Stream is what the live leads stream will capture, with a NATS URL.
	Stream *leads.StreamPlan `json:"stream,omitempty"`
}

type workflowJSON struct {
	Name              string   `json:"name"`
	Subject           string   `json:"subject"`
	Mode              string   `json:"mode"`
	BatchSize         int      `json:"batch_size,omitempty"`
	Match             []string `json:"match,omitempty"`
	OnMatch           string   `json:"on_match,omitempty"`
	Loop              string   `json:"loop,omitempty"`
	Concurrency       int      `json:"concurrency"`
	MaxInFlight       int      `json:"max_in_flight"`
	MaxAttempts       int      `json:"max_attempts"`
	DeadLetterSubject string   `json:"dead_letter_subject"`
	ResultsSubject    string   `json:"results_subject"`
	Inputs            []string `json:"inputs"`
}

type configErrorJSON struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
}

func validateReport(file string, cfg *mapping.Config, err error) validateJSON {
	out := validateJSON{File: file, Valid: err == nil}
	if err != nil {
		var ce *mapping.ConfigError
		var ces mapping.ConfigErrors
		switch {
		case errors.As(err, &ces):
			for _, e := range ces {
				out.Errors = append(out.Errors, configErrorJSON{e.File, e.Line, e.Column, e.Msg})
			}
		case errors.As(err, &ce):
			out.Errors = []configErrorJSON{{ce.File, ce.Line, ce.Column, ce.Msg}}
		default:
			out.Errors = []configErrorJSON{{File: file, Message: err.Error()}}
		}
		return out
	}
	for _, wf := range cfg.Workflows {
		wj := workflowJSON{Name: wf.Name, Subject: wf.Subject, Mode: wf.Mode, Match: wf.Match, Concurrency: wf.Concurrency, MaxInFlight: wf.MaxInFlight,
			MaxAttempts: wf.Retry.MaxAttempts, DeadLetterSubject: wf.DeadLetterSubject, ResultsSubject: wf.ResultsSubject, Inputs: wf.Inputs()}
		if wf.HasLoop() {
			wj.Loop = wf.LoopTemplate()
		}
		if wf.Mode == mapping.ModeBulk {
			wj.BatchSize = wf.BatchSize
		}
		if len(wf.Match) > 0 {
			wj.OnMatch = wf.OnMatch
		}
		out.Workflows = append(out.Workflows, wj)
	}
	return out
}

func (a *app) mapCommand() *cobra.Command {
	var (
		configPath, workflow string
		asJSON               bool
	)
	cmd := &cobra.Command{
		Use:   "map [EVENT.json]",
		Short: "Dry run: print the Kustomer request body (or bodies) an event would produce",
		Long: `Map one event (a JSON object, from EVENT.json or stdin) with a workflow and print the exact
request body that would be sent to POST /v1/customers, one per Loop item, or the errors that would
dead-letter it (then the command exits 1). Nothing is sent anywhere: this is the "test this step"
of a workflow tool. For a workflow with match, each item first lists the look-ups it would make, in
order, and what is done with the body when one finds a customer (on_match: skip or update).

--json prints one document: {"workflow", "on_match" (with match), "ok", "error" (the event's),
"items": [{"index", "lookups": [{"key", "value", "path", "only_if_seen"}], "request"} or {"index",
"error", "kind"}]}.`,
		Example: `  kustomer-sync map --config testdata/workflows.yaml --workflow batch testdata/batch.json
  echo '{"name":"Jane","emails":"JANE@x.com"}' | kustomer-sync map
  kustomer-sync map --json --config testdata/workflows.yaml --workflow batch testdata/batch.json | jq '.items[].request'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := mapping.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = mapping.Load(configPath); err != nil {
					return err
				}
			}
			wf := cfg.Workflows[0]
			if workflow != "" {
				var ok bool
				if wf, ok = cfg.Workflow(workflow); !ok {
					return flagError(cmd, "workflow", "not in %s", cfg.Source)
				}
			} else if len(cfg.Workflows) > 1 {
				return usageError{fmt.Errorf("%s has %d workflows: choose one with --workflow", cfg.Source, len(cfg.Workflows))}
			}
			var in io.Reader = a.stdin
			name := "stdin"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in, name = f, args[0]
			}
			data, err := io.ReadAll(in)
			if err != nil {
				return err
			}
			var trigger map[string]any
			if err := json.Unmarshal(data, &trigger); err != nil || trigger == nil {
				return fmt.Errorf("%s: want one JSON object: %s", name, notAnObject(err))
			}
			res := mapEvent(wf, trigger)
			if asJSON {
				err = writeJSON(a.stdout, res)
			} else {
				err = printMapping(a.stdout, wf.HasLoop(), res)
			}
			if err == nil && !res.OK {
				err = errMappingFailed
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "", "workflow config file (default: the built-in workflow)")
	cmd.Flags().StringVarP(&workflow, "workflow", "w", "", "workflow to use (required when the file has several)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON document with every item's request or error")
	bindEnv(cmd.Flags(), "config", "KSYNC_CONFIG")
	return cmd
}

// notAnObject says why a document is not one JSON object, without Go types.
func notAnObject(err error) string {
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return "got null"
	case errors.As(err, &te):
		return "got a JSON " + te.Value
	default:
		return err.Error()
	}
}

// errMappingFailed makes `map` exit non-zero when any item would fail.
var errMappingFailed = errors.New("some items would be dead-lettered (see above)")

// mapResult is what `map` found: --json prints it as it is.
type mapResult struct {
	Workflow string       `json:"workflow"`
	OnMatch  string       `json:"on_match,omitempty"` // with match: skip or update
	OK       bool         `json:"ok"`
	Error    string       `json:"error,omitempty"` // the event as a whole (its Loop) failed
	Items    []mappedItem `json:"items"`
}

type mappedItem struct {
	Index int `json:"index"`
	// Lookups are made first, in order, by a workflow with match.
	Lookups []mapping.Lookup `json:"lookups,omitempty"`
	Request any              `json:"request,omitempty"`
	Error   string           `json:"error,omitempty"`
	Kind    string           `json:"kind,omitempty"`
}

func mapEvent(wf *mapping.Workflow, trigger map[string]any) mapResult {
	res := mapResult{Workflow: wf.Name, OnMatch: wf.OnMatch, OK: true, Items: []mappedItem{}}
	items, err := wf.Items(trigger)
	if err != nil {
		res.OK, res.Error = false, err.Error()
		return res
	}
	for i, item := range items {
		req, err := wf.Map(trigger, item, i)
		if err != nil {
			res.OK = false
			res.Items = append(res.Items, mappedItem{Index: i, Error: err.Error(), Kind: mapping.KindOf(err).String()})
			continue
		}
		res.Items = append(res.Items, mappedItem{Index: i, Lookups: wf.Lookups(req), Request: req})
	}
	return res
}

// printLookups says what a workflow with match asks Kustomer before the
// request, and what the request then is.
func printLookups(w io.Writer, onMatch string, lookups []mapping.Lookup) {
	fmt.Fprintln(w, "look-ups, in order, until one finds a customer:")
	for _, l := range lookups {
		note := ""
		if l.OnlyIfSeen {
			note = "  (only for an item seen before: fresh_ids)"
		}
		fmt.Fprintf(w, "  GET %s%s\n", l.Path, note)
	}
	if len(lookups) == 0 {
		fmt.Fprintln(w, "  none: the item has no value for any match key")
	}
	if onMatch == mapping.OnMatchUpdate {
		fmt.Fprintln(w, "found: PUT /v1/customers/{id}?replace=false with this body (lists merged into the customer's, at most 10 each); none found: POST /v1/customers with it:")
	} else {
		fmt.Fprintln(w, "found: nothing is sent (on_match: skip); none found: POST /v1/customers with this body:")
	}
}

func printMapping(w io.Writer, loop bool, res mapResult) error {
	if res.Error != "" {
		_, err := fmt.Fprintf(w, "event: %s\n", res.Error)
		return err
	}
	if loop && len(res.Items) == 0 {
		_, err := fmt.Fprintln(w, "0 items: the Loop's array is empty, so nothing is sent")
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	for _, it := range res.Items {
		if loop {
			fmt.Fprintf(w, "# item %d\n", it.Index)
		}
		if it.Error != "" {
			fmt.Fprintf(w, "error (%s): %s\n", it.Kind, it.Error)
			continue
		}
		if res.OnMatch != "" {
			printLookups(w, res.OnMatch, it.Lookups)
		}
		if err := enc.Encode(it.Request); err != nil {
			return err
		}
	}
	return nil
}
