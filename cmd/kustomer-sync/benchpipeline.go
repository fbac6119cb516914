package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/kustomer-sync/kustomer-sync/bench"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// benchPipeline drains --events events four ways with no budget and no
// sandbox latency (the bare loop, the bare loop with per-item mode's
// JetStream writes, per-item mode, bulk mode), --repeat times, and prints
// each one's median customers per second and CPU per customer beside the
// floor's.
func (a *app) benchPipeline(ctx context.Context, f benchFlags) error {
	if f.profile != "" {
		if err := os.MkdirAll(f.profile, 0o755); err != nil {
			return fmt.Errorf("--profile: %w", err)
		}
	}
	kinds := []string{bench.PipelineFloor, bench.PipelineFloorWrites, mapping.ModePerItem, mapping.ModeBulk}
	// The rounds interleave the kinds, so that a machine whose speed drifts
	// (a shared VM) slows each kind alike; each kind's median is reported.
	runs := make(map[string][]bench.PipelineReport, len(kinds))
	for round := range f.repeat {
		for _, kind := range kinds {
			fmt.Fprintf(a.stdout, "bench: pipeline round %d of %d, %s, %d single-lead events, no budget, no sandbox latency ...\n", round+1, f.repeat, kind, f.events)
			profile := ""
			if round == 0 {
				profile = f.profile
			}
			rep, err := bench.RunPipeline(ctx, bench.PipelineConfig{
				Kind: kind, Events: f.events, Limit: f.timeout, ProfileDir: profile,
				NATSOptions: natsLogOptions(a.log), Logger: a.log,
			})
			if err != nil {
				return err
			}
			if !rep.Acked {
				return fmt.Errorf("bench: pipeline: %s did not drain %d events in %s (%d created): raise --timeout", kind, f.events, f.timeout, rep.Created)
			}
			fmt.Fprintf(a.stdout, "  %s: %.0f customers/s, %.0f µs CPU per customer\n", rep.Elapsed.Round(10*time.Millisecond), rep.PerSecond(), micros(rep.CPUPerCustomer()))
			runs[kind] = append(runs[kind], rep)
		}
	}
	median := func(kind string) bench.PipelineReport {
		rs := slices.Clone(runs[kind])
		slices.SortFunc(rs, func(x, y bench.PipelineReport) int { return cmp.Compare(x.CPUPerCustomer(), y.CPUPerCustomer()) })
		return rs[len(rs)/2]
	}
	floor := median(bench.PipelineFloor).CPUPerCustomer()
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nrun (median of %d)\tcreated\ttime\tcustomers/s\trequests\tCPU µs/customer\t× floor\t\n", f.repeat)
	for _, kind := range kinds {
		r := median(kind)
		ratio := "-"
		if floor > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.CPUPerCustomer())/float64(floor))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%d\t%.0f\t%s\t\n", kind, r.Created, r.Elapsed.Round(10*time.Millisecond),
			r.PerSecond(), r.Requests, micros(r.CPUPerCustomer()), ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, kind := range kinds {
		if r := runs[kind][0]; r.Profile != "" {
			fmt.Fprintf(a.stdout, "CPU profile: %s (go tool pprof -top %s)\n", r.Profile, r.Profile)
		}
	}
	return nil
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
