package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// reloadsMetric counts SIGHUP reloads by result.
func reloadsMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kustomer_sync_config_reloads_total",
		Help: "Config reloads on SIGHUP, by result: applied; refused (the file or the stream did not validate, the running workflows went on); failed (the new workflows could not start, the previous ones run again).",
	}, []string{"result"})
	reg.MustRegister(c)
	return c
}

// reload applies the --config file again, on SIGHUP. The file is validated
// first, and so is the leads stream against its workflows: a bad one is
// refused and the running workflows go on. A good one
// replaces them: the worker drains within --drain-timeout, as on SIGTERM, and
// starts again with the new workflows (see [worker.Worker.Reload]). If they
// cannot start, the previous workflows start again. reload returns an error
// only when neither starts: the process then exits.
func (st *stack) reload(ctx context.Context, a *app, f *workerFlags, reloads *prometheus.CounterVec) error {
	if f.configPath == "" {
		a.log.Warn().Msg("SIGHUP: nothing to reload without --config; the built-in workflow goes on")
		reloads.WithLabelValues("refused").Inc()
		return nil
	}
	next, err := mapping.Load(f.configPath)
	if err != nil {
		a.log.Error().Err(err).Str("config", f.configPath).Msg("config reload refused: the running workflows go on")
		reloads.WithLabelValues("refused").Inc()
		return nil
	}
	added, removed := workflowChanges(st.config, next)
	// The worker says when it drains: only once it accepted the workflows.
	a.log.Info().Str("config", f.configPath).Strs("added", added).Strs("removed", removed).Msg("reloading the config")
	err = st.worker.Reload(ctx, next.Workflows)
	switch {
	case err == nil:
		st.config = next
		if st.ingest != nil {
			st.ingest.workflows.Store(&next.Workflows)
		}
		reloads.WithLabelValues("applied").Inc()
		a.log.Info().Str("config", f.configPath).Int("workflows", len(next.Workflows)).Msg("config reloaded")
		return nil
	case errors.Is(err, worker.ErrReloadRefused):
		a.log.Error().Err(err).Str("config", f.configPath).Msg("config reload refused: the running workflows go on")
		reloads.WithLabelValues("refused").Inc()
		return nil
	case ctx.Err() != nil:
		return nil // shutting down meanwhile: nothing was started
	}
	select {
	case <-st.worker.Stopped():
		return fmt.Errorf("config reload: %w", err)
	default:
	}
	a.log.Error().Err(err).Str("config", f.configPath).Msg("config reload failed: the new workflows cannot start; the previous ones run again")
	reloads.WithLabelValues("failed").Inc()
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
