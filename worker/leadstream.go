package worker

import (
	"context"
	"slices"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// streamConfig is the leads stream as this replica would manage it: its
// workflows' subjects (added by jetstreamConfig), plus those of every other
// live replica's workflows, so that a reload or a start with fewer
// workflows never stops the stream capturing what another replica still
// runs. A replica whose heartbeat cannot be read is not counted.
func (w *Worker) streamConfig(ctx context.Context) leads.StreamConfig {
	c := w.cfg.Stream
	c.Subjects = slices.Clone(c.Subjects)
	replicas, err := replica.Read(ctx, w.js, w.cfg.Budget.Bucket)
	keep := err != nil
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot read the other replicas' workflows: the leads stream keeps every subject it captures")
	}
	for _, r := range replicas {
		if r.Replica == w.budget.ID() {
			continue
		}
		for _, s := range r.Workflows {
			if s.Subject == "" {
				// A replica of an earlier version does not say what it
				// consumes: keep everything, as when none can be read.
				keep = true
				continue
			}
			c.Subjects = append(c.Subjects, s.Subject)
		}
	}
	if keep {
		// Whatever the stream captures now is kept, rather than drop a
		// subject another replica may run.
		if st, err := w.js.Stream(ctx, c.Name); err == nil && st.CachedInfo().Config.Metadata[leads.ManagedByKey] == leads.ManagedByValue {
			c.Subjects = append(c.Subjects, st.CachedInfo().Config.Subjects...)
		}
	}
	return c
}
