package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kustomer-sync/kustomer-sync/bench"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// benchPipeline drains --events events three ways with no budget and no
// sandbox latency (the bare loop, per-item mode, bulk mode) and prints
// customers per second and CPU per customer, each mode beside the floor.
func (a *app) benchPipeline(ctx context.Context, f benchFlags) error {
	if f.profile != "" {
		if err := os.MkdirAll(f.profile, 0o755); err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	var reps []bench.PipelineReport
	for _, kind := range []string{bench.PipelineFloor, mapping.ModePerItem, mapping.ModeBulk} {
		fmt.Fprintf(a.stdout, "\nbench: pipeline, %s, %d single-lead events, no budget, no sandbox latency ...\n", kind, f.events)
		rep, err := bench.RunPipeline(ctx, bench.PipelineConfig{
			Kind: kind, Events: f.events, Limit: f.timeout, ProfileDir: f.profile,
			NATSOptions: natsLogOptions(a.log), Logger: a.log,
		})
		if err != nil {
			return err
		}
		if !rep.Acked {
			fmt.Fprintf(a.stdout, "  not drained in %s: %d created\n", f.timeout, rep.Created)
		}
		reps = append(reps, rep)
	}
	floor := reps[0].CPUPerCustomer()
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\nrun\tcreated\ttime\tcustomers/s\trequests\tCPU µs/customer\t× floor\t")
	for _, r := range reps {
		ratio := "-"
		if floor > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.CPUPerCustomer())/float64(floor))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%d\t%.0f\t%s\t\n", r.Config.Kind, r.Created, r.Elapsed.Round(10*time.Millisecond),
			r.PerSecond(), r.Requests, float64(r.CPUPerCustomer())/float64(time.Microsecond), ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reps {
		if r.Profile != "" {
			fmt.Fprintf(a.stdout, "CPU profile: %s (go tool pprof -top %s)\n", r.Profile, r.Profile)
		}
	}
	return nil
}
