package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// metricReloads counts SIGHUP reloads by result.
var metricReloads = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "kustomer_sync_config_reloads_total",
	Help: "Config reloads on SIGHUP, by result: applied; refused (the file or the stream did not validate, the running workflows went on); failed (the new workflows could not start, the previous ones run again).",
}, []string{"result"})

// reload applies the --config file again, on SIGHUP. The file is validated
// first, and so is the leads stream against its workflows: a bad one is
// refused and the running workflows go on. A good one
// replaces them: the worker drains within --drain-timeout, as on SIGTERM, and
// a worker with the new workflows starts (it creates the consumers of new
// workflows; removed workflows are no longer consumed, and their durable
// consumers are kept, for the replicas still running them or for a later
// config). If it cannot start, the previous workflows start again. reload
// returns an error only when neither starts: the process then exits.
func (st *stack) reload(ctx context.Context, a *app, f *workerFlags) error {
	if f.configPath == "" {
		a.log.Warn().Msg("SIGHUP: nothing to reload without --config; the built-in workflow goes on")
		metricReloads.WithLabelValues("refused").Inc()
		return nil
	}
	r := st.replica
	next, err := mapping.Load(f.configPath)
	if err == nil {
		_, err = worker.CheckStream(ctx, st.js, r.cfg.Stream, next.Workflows)
	}
	if err != nil {
		a.log.Error().Err(err).Str("config", f.configPath).Msg("config reload refused: the running workflows go on")
		metricReloads.WithLabelValues("refused").Inc()
		return nil
	}
	prev := st.config
	added, removed := workflowChanges(prev, next)
	a.log.Info().Str("config", f.configPath).Strs("added", added).Strs("removed", removed).Dur("deadline", f.drainTimeout).
		Msg("reloading the config: draining in-flight events")

	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.drainTimeout)
	err = r.worker.Stop(drainCtx)
	cancel()
	if err != nil {
		a.log.Warn().Err(err).Msg("drain deadline passed; unfinished events are left for redelivery")
	}
	if ctx.Err() != nil {
		return nil // shutting down meanwhile: nothing to start
	}
	if err := r.startWorker(ctx, next.Workflows); err != nil {
		a.log.Error().Err(err).Str("config", f.configPath).Msg("config reload failed: the new workflows cannot start; starting the previous ones again")
		metricReloads.WithLabelValues("failed").Inc()
		if perr := r.startWorker(ctx, prev.Workflows); perr != nil {
			return fmt.Errorf("config reload: the new workflows cannot start (%w), nor can the previous ones: %w", err, perr)
		}
		return nil
	}
	st.config = next
	if st.ingest != nil {
		st.ingest.workflows.Store(&next.Workflows)
	}
	metricReloads.WithLabelValues("applied").Inc()
	a.log.Info().Str("config", f.configPath).Int("workflows", len(next.Workflows)).Msg("config reloaded")
	return nil
}

// workflowChanges names the workflows next adds to prev and removes from it.
func workflowChanges(prev, next *mapping.Config) (added, removed []string) {
	names := func(c *mapping.Config) []string {
		out := make([]string, 0, len(c.Workflows))
		for _, wf := range c.Workflows {
			out = append(out, wf.Name)
		}
		return out
	}
	before, after := names(prev), names(next)
	for _, n := range after {
		if !slices.Contains(before, n) {
			added = append(added, n)
		}
	}
	for _, n := range before {
		if !slices.Contains(after, n) {
			removed = append(removed, n)
		}
	}
	return added, removed
}
