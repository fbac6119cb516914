package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/bench"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

type benchFlags struct {
	rate     int
	windows  int
	window   time.Duration
	replicas []int
	foreign  float64
	latency  time.Duration
	// --mode: compare bulk and per-item mode (benchbulk.go)
	mode      string
	events    int
	bulkDelay time.Duration
	timeout   time.Duration
	// --job-model: bulk mode in each of the sandbox's job models (benchbulk.go)
	jobModel       string
	perEvent       []int
	bulkJobTimeout time.Duration
	lostRate       float64
	replicaLogs    string
	process        bool
	// --pipeline: CPU per customer of each mode beside a bare loop (benchpipeline.go)
	pipeline bool
	profile  string
	repeat   int
}

func (a *app) benchCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks against the sandbox: rate fidelity, bulk against per-item mode (--mode), CPU per customer (--pipeline)",
		Long: `Start an embedded NATS server and a Kustomer sandbox that enforces a budget of --rate requests
per --window, then run worker replicas (in this process, each with its own connection, limiter
and share of the budget) against a backlog of lead events for --windows windows. It reports,
per window, the customers created as a share of the budget and the 429s the workers got.

With --foreign 0.3 another client of the same org spends 30% of the budget at an even pace,
so the workers must adapt to x-ratelimit-remaining; the first window is the one they learn in.

With --mode bulk (or per-item) it compares the two modes instead: --events single-lead events
in bulk mode until all are created and acknowledged, their outcomes durable (or --timeout),
with bulk jobs taking --bulk-delay, then the same in per-item mode for one window, projected
to all events; for each, the time, the customers created per budget unit (polls included),
429s and duplicates. With --job-model (a model of the sandbox's, or all) it runs bulk mode alone
against each job model instead, for each --per-event shape and --replicas count, and prints one
row each: created, duplicates, false dead letters, customers per unit, polls per job, 429s, time
and the process's peak memory (VmHWM, NATS server and sandbox included).

With --pipeline it measures the pipeline itself, with no budget and no sandbox latency: a bare
loop (fetch, POST, ack: the floor), the same loop making per-item mode's JetStream writes around
the POST (floor+writes: ledger claim, ledger record, result, run record, and no other work of the
worker), per-item mode, then bulk mode, each draining --events events (default 60,000); the modes
with ledger, results and run log on. For each it prints customers per second and the CPU per
customer of this whole process (NATS server and sandbox included) beside the floor's: the median
of --repeat rounds that interleave the four, so that a machine whose speed drifts slows each
alike. --profile DIR writes the first round's CPU profiles for go tool pprof (with --job-model,
each run's profile, replicas in this process).`,
		Example: `  kustomer-sync bench                                  # 1 and 3 replicas, then 1 replica + 30% foreign
  kustomer-sync bench --mode bulk --rate 1000          # 100,000 leads in bulk mode, per-item beside it
  kustomer-sync bench --mode bulk --job-model all --events 20000 --per-event 1,10 --replicas 1,3 --rate 1000
  kustomer-sync bench --replicas 3 --windows 2 --rate 600
  kustomer-sync bench --pipeline --profile /tmp/prof    # customers/s and CPU per customer of each mode`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.pipeline {
				if f.mode != "" {
					return usageError{errors.New("--pipeline runs every mode: leave --mode out")}
				}
				if !cmd.Flags().Changed("events") {
					f.events = bench.PipelineEventsDefault
				}
				if f.repeat < 1 {
					return usageError{fmt.Errorf("--repeat %d: want 1 or more", f.repeat)}
				}
				return a.benchPipeline(cmd.Context(), f)
			}
			if f.jobModel != "" {
				if f.mode != mapping.ModeBulk {
					return usageError{errors.New("--job-model goes with --mode bulk")}
				}
				if f.jobModel != "all" && !slices.Contains(sandbox.JobModels, f.jobModel) {
					return usageError{fmt.Errorf("--job-model %q: want all or one of %s", f.jobModel, strings.Join(sandbox.JobModels, ", "))}
				}
				if f.replicaLogs != "" && !f.process {
					return usageError{errors.New("--replica-logs goes with --process")}
				}
				if f.profile != "" && f.process {
					return usageError{errors.New("--profile profiles this process: leave --process out to have the replicas in it")}
				}
				if f.lostRate < 0 || f.lostRate > 1 {
					return usageError{fmt.Errorf("--lost-rate %v: want a share in (0, 1]", f.lostRate)}
				}
				if slices.ContainsFunc(f.perEvent, func(n int) bool { return n < 1 }) {
					return usageError{fmt.Errorf("--per-event %v: want 1 or more leads per event", f.perEvent)}
				}
				return a.benchJobModels(cmd.Context(), f)
			}
			switch f.mode {
			case "":
			case mapping.ModeBulk, mapping.ModePerItem:
				return a.benchModes(cmd.Context(), f)
			default:
				return usageError{fmt.Errorf("--mode %q: want bulk or per-item", f.mode)}
			}
			scenarios := []benchScenario{}
			if cmd.Flags().Changed("replicas") || cmd.Flags().Changed("foreign") {
				for _, n := range f.replicas {
					scenarios = append(scenarios, benchScenario{replicas: n, foreign: f.foreign})
				}
			} else {
				scenarios = []benchScenario{{replicas: 1}, {replicas: 3}, {replicas: 1, foreign: 0.3}}
			}
			for _, sc := range scenarios {
				if err := a.bench(cmd.Context(), f, sc); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.rate, "rate", 600, "the org budget R the sandbox enforces, per window")
	fl.IntVar(&f.windows, "windows", 2, "windows to measure (each --window long)")
	fl.DurationVar(&f.window, "window", time.Minute, "the sandbox's rate-limit window (Kustomer: 60s)")
	fl.IntSliceVar(&f.replicas, "replicas", []int{1}, "worker replicas sharing the budget (a list runs one scenario each)")
	fl.Float64Var(&f.foreign, "foreign", 0, "share of the budget a foreign client spends on the same org")
	fl.DurationVar(&f.latency, "latency", 20*time.Millisecond, "sandbox latency per request")
	fl.StringVar(&f.mode, "mode", "", "bulk or per-item: run --events single-lead events in bulk mode to the end, then per-item mode for one window, and compare them")
	fl.IntVar(&f.events, "events", 100000, "with --mode or --pipeline: events to publish (--pipeline: default 60000)")
	fl.DurationVar(&f.bulkDelay, "bulk-delay", 2*time.Second, "with --mode: how long the sandbox's bulk jobs take")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "with --mode or --pipeline: give a run up after this long")
	fl.StringVar(&f.jobModel, "job-model", "", "with --mode bulk: drain --events leads in bulk mode against this sandbox job model, or all of them ("+strings.Join(sandbox.JobModels, ", ")+"), one row per model, --per-event and --replicas")
	fl.IntSliceVar(&f.perEvent, "per-event", []int{1}, "with --job-model: leads per event (a list runs each; more than 1 is a Loop event)")
	fl.BoolVar(&f.process, "process", false, "with --job-model: run each replica as a process of this binary (kustomer-sync run), and report the replicas' own peak memory instead of this process's")
	fl.StringVar(&f.replicaLogs, "replica-logs", "", "with --process: keep each replica's log (JSON, level info) in this folder as <replica id>.log; a later run overwrites it")
	fl.DurationVar(&f.bulkJobTimeout, "bulk-job-timeout", 0, "with --job-model: the workflow's bulk_job_timeout (default 3x --bulk-delay, at least 10s, so lost answers resolve within the run)")
	fl.Float64Var(&f.lostRate, "lost-rate", 0, "with --job-model lost-answers: the share of bulk submissions whose answer is lost, in (0, 1] (default the model's, 0.01)")
	fl.BoolVar(&f.pipeline, "pipeline", false, "measure customers/s and CPU per customer of each mode and of a bare fetch-POST-ack loop, with no budget and no latency")
	fl.IntVar(&f.repeat, "repeat", 3, "with --pipeline: rounds, each running the floor, floor+writes, per-item and bulk once; the medians are reported")
	fl.StringVar(&f.profile, "profile", "", "with --pipeline: write the first round's CPU profiles to this folder (floor.pprof, floor+writes.pprof, per-item.pprof, bulk.pprof); with --job-model (without --process): each run's, as <model>-<per-event>x<replicas>.pprof")
	return cmd
}

type benchScenario struct {
	replicas int
	foreign  float64
}

func (a *app) bench(ctx context.Context, f benchFlags, sc benchScenario) error {
	cfg := bench.Config{
		Rate: f.rate, Window: f.window, Windows: f.windows, Replicas: sc.replicas, Foreign: sc.foreign,
		Latency: f.latency, NATSOptions: natsLogOptions(a.log), Logger: a.log,
	}
	fmt.Fprintf(a.stdout, "\nbench: budget %d per %s, %d replica(s), foreign client %.0f%% — running %d window(s) ...\n",
		f.rate, f.window, sc.replicas, sc.foreign*100, cfg.Measured())
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "window\tworkers created\tof budget\tforeign created\tbudget used\tworker 429s\t")
	for i, w := range rep.Windows {
		fmt.Fprintf(tw, "%d\t%d\t%.1f%%\t%d\t%.1f%%\t%d\t\n", i+1, w.Created, 100*float64(w.Created)/float64(f.rate),
			w.ForeignCreated, 100*float64(w.Created+w.ForeignCreated)/float64(f.rate), w.Throttled)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if sc.foreign > 0 {
		fmt.Fprintf(a.stdout, "foreign client: %d requests, %d of them 429 (it does not adapt)\n", rep.ForeignRequests, rep.ForeignThrottled)
	}
	fmt.Fprintf(a.stdout, "sandbox: %d requests, %d 429s in all\n", rep.Requests, rep.Throttled)
	return nil
}
