package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/kustomer-sync/kustomer-sync/bench"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// benchModes runs --events single-lead events in bulk mode to the end (or
// --timeout), then per-item mode for one window, and prints both side by
// side: time, customers per budget unit (polls included), 429s, duplicates.
func (a *app) benchModes(ctx context.Context, f benchFlags) error {
	var reps []bench.ModeReport
	for _, m := range []struct {
		mode  string
		limit time.Duration
	}{{mapping.ModeBulk, f.timeout}, {mapping.ModePerItem, f.window}} {
		fmt.Fprintf(a.stdout, "\nbench: %s mode, %d single-lead events, budget %d per %s, bulk jobs take %s ...\n",
			m.mode, f.events, f.rate, f.window, f.bulkDelay)
		rep, err := bench.RunMode(ctx, bench.ModeConfig{
			Mode: m.mode, Events: f.events, Rate: f.rate, Window: f.window, Latency: f.latency, BulkDelay: f.bulkDelay,
			Replicas: f.replicas[0], Limit: m.limit, NATSOptions: natsLogOptions(a.log), Logger: a.log,
			Progress: func(elapsed time.Duration, created, requests int) {
				fmt.Fprintf(a.stdout, "  %s: %d created, %d requests\n", elapsed.Round(time.Second), created, requests)
			},
		})
		if err != nil {
			return err
		}
		reps = append(reps, rep)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tevents\tcreated\ttime\tall done in\trequests\tcustomers/unit\tbulk jobs\tpolls\tlook-ups\t429s\tduplicates\t")
	for _, r := range reps {
		all := "not in " + r.Elapsed.Round(time.Second).String()
		switch {
		case r.Finished:
			all = r.Elapsed.Round(100 * time.Millisecond).String()
		case r.Projected > 0:
			all = "~" + r.Projected.Round(time.Second).String() + " (projected)"
		}
		perUnit := 0.0
		if r.Stats.Requests > 0 {
			perUnit = float64(r.Created) / float64(r.Stats.Requests)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t\n", r.Config.Mode, r.Config.Events, r.Created,
			r.Elapsed.Round(100*time.Millisecond), all, r.Stats.Requests, perUnit, r.Stats.BulkJobs, r.Stats.BulkPolls,
			r.Stats.Lookups, r.Stats.RateLimited, r.Stats.Duplicates)
	}
	return tw.Flush()
}

// benchJobModels runs --events leads in bulk mode to the end (or
// --timeout) once per job model of --job-model (one, or all), per
// --per-event shape and per --replicas count, and prints one row each:
// created, duplicates, false dead letters, customers per unit (polls
// included), polls per job, 429s, time and the process's peak memory.
func (a *app) benchJobModels(ctx context.Context, f benchFlags) error {
	models := []string{f.jobModel}
	if f.jobModel == "all" {
		models = sandbox.JobModels
	}
	binary := ""
	if f.process {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		binary = exe
	}
	if f.profile != "" {
		if err := os.MkdirAll(f.profile, 0o755); err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	var reps []bench.ModeReport
	for _, model := range models {
		for _, per := range f.perEvent {
			for _, n := range f.replicas {
				fmt.Fprintf(a.stdout, "bench: bulk mode, job model %s, %d leads in events of %d, %d replica(s), budget %d per %s, jobs take %s ...\n",
					model, f.events, per, n, f.rate, f.window, f.bulkDelay)
				profile := ""
				if f.profile != "" {
					profile = filepath.Join(f.profile, fmt.Sprintf("%s-%dx%d.pprof", model, per, n))
				}
				rep, err := bench.RunMode(ctx, bench.ModeConfig{
					Mode: mapping.ModeBulk, Events: f.events, PerEvent: per, JobModel: model, Rate: f.rate, Window: f.window,
					Latency: f.latency, BulkDelay: f.bulkDelay, BulkJobTimeout: f.bulkJobTimeout, LostRate: f.lostRate, Replicas: n, Limit: f.timeout,
					MaxInFlight: mapping.MaxInFlightBulkDefault, // the workflow's default settings
					Binary:      binary, LogDir: f.replicaLogs, Profile: profile, NATSOptions: natsLogOptions(a.log), Logger: a.log,
					// A run of a million leads takes many minutes: say how far it is.
					ProgressEvery: time.Minute,
					Progress: func(elapsed time.Duration, created, requests int) {
						fmt.Fprintf(a.stdout, "  %s: %d created, %d requests\n", elapsed.Round(time.Second), created, requests)
					},
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "  %s\n", jobModelRow(rep))
				if profile != "" {
					fmt.Fprintf(a.stdout, "  CPU profile: %s (go tool pprof -top %s)\n", profile, profile)
				}
				for reason, n := range rep.DeadLetterReasons {
					fmt.Fprintf(a.stdout, "    dead letters: %d × %s\n", n, reason)
				}
				reps = append(reps, rep)
			}
		}
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "job model\treplicas\tleads/event\tleads\tcreated\tduplicates\tfalse dead letters\tcustomers/unit\tpolls/job\tlook-ups\t429s\ttime\tpeak RSS\t")
	for _, r := range reps {
		fmt.Fprintf(tw, "%s\t\n", jobModelRow(r))
	}
	return tw.Flush()
}

// jobModelRow is a run's row of benchJobModels' table, tab-separated.
func jobModelRow(r bench.ModeReport) string {
	perUnit, perJob := 0.0, 0.0
	if r.Stats.Requests > 0 {
		perUnit = float64(r.Created) / float64(r.Stats.Requests)
	}
	if r.Stats.BulkJobs > 0 {
		perJob = float64(r.Stats.BulkPolls) / float64(r.Stats.BulkJobs)
	}
	took := r.Elapsed.Round(100 * time.Millisecond).String()
	if !r.Finished {
		took = "not done in " + r.Elapsed.Round(time.Second).String()
	}
	return fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.2f\t%d\t%d\t%s\t%d MB", r.Config.JobModel, r.Config.Replicas, r.Config.PerEvent,
		r.Config.Events, r.Created, r.Stats.Duplicates, r.DeadLetters, perUnit, perJob, r.Stats.Lookups, r.Stats.RateLimited, took, r.PeakRSS>>20)
}
