package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/mapping"
)

func init() {
	extraCommands = append(extraCommands, (*app).validateCommand, (*app).mapCommand)
}

func (a *app) validateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate CONFIG",
		Short: "Check a workflow config file and list its workflows",
		Long: `Parse CONFIG, compile every template and check every setting, exactly as 'run' does at
start-up. Every mistake in the file is listed, each with its file, line and column, and the
command exits 1. On success, list the workflows.`,
		Example: "  kustomer-sync validate testdata/workflows.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := mapping.Load(args[0])
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "%s: %d workflow(s), all templates compile\n\n", args[0], len(cfg.Workflows))
			fmt.Fprintln(w, "NAME\tSUBJECT\tLOOP\tCONCURRENCY\tIN FLIGHT\tATTEMPTS\tDEAD LETTERS\tINPUTS")
			for _, wf := range cfg.Workflows {
				loop := "-"
				if wf.HasLoop() {
					loop = wf.LoopTemplate()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", wf.Name, wf.Subject, loop, wf.Concurrency,
					wf.MaxInFlight, wf.Retry.MaxAttempts, wf.DeadLetterSubject, strings.Join(wf.Inputs(), ","))
			}
			return w.Flush()
		},
	}
}

func (a *app) mapCommand() *cobra.Command {
	var configPath, workflow string
	cmd := &cobra.Command{
		Use:   "map [EVENT.json]",
		Short: "Dry run: print the Kustomer request body (or bodies) an event would produce",
		Long: `Map one event (a JSON object, from EVENT.json or stdin) with a workflow and print the exact
request body that would be sent to POST /v1/customers, one per Loop item, or the errors that would
dead-letter it. Nothing is sent anywhere: this is the "test this step" of a workflow tool.`,
		Example: `  kustomer-sync map --config testdata/workflows.yaml --workflow batch testdata/batch.json
  echo '{"name":"Jane","emails":"JANE@x.com"}' | kustomer-sync map`,
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
					return usageError{fmt.Errorf("--workflow %q: not in %s", workflow, cfg.Source)}
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
				return fmt.Errorf("%s: want one JSON object: %v", name, cmp.Or(errText(err), "got null"))
			}
			return a.printMapping(wf, trigger)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", os.Getenv("KSYNC_CONFIG"), "workflow config file (default: the built-in workflow)")
	cmd.Flags().StringVarP(&workflow, "workflow", "w", "", "workflow to use (required when the file has several)")
	return cmd
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errMappingFailed makes `map` exit non-zero when any item would fail.
var errMappingFailed = errors.New("some items would be dead-lettered (see above)")

func (a *app) printMapping(wf *mapping.Workflow, trigger map[string]any) error {
	items, err := wf.Items(trigger)
	if err != nil {
		fmt.Fprintf(a.stdout, "event: %v\n", err)
		return errMappingFailed
	}
	failed := false
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	for i, item := range items {
		if wf.HasLoop() {
			fmt.Fprintf(a.stdout, "# item %d\n", i)
		}
		req, err := wf.Map(trigger, item, i)
		if err != nil {
			failed = true
			fmt.Fprintf(a.stdout, "error (%s): %v\n", mapping.KindOf(err), err)
			continue
		}
		if err := enc.Encode(req); err != nil {
			return err
		}
	}
	if failed {
		return errMappingFailed
	}
	return nil
}
