package leads

import (
	"context"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/replica"
)

// WithLiveReplicas returns c, the leads stream as replica self would manage
// it for its own workflows (added by JetStreamConfig), plus the subjects of
// every other live replica's workflows, read from the replicas bucket
// (replica.Read), so that a reload or a start with fewer workflows never
// stops the stream capturing what another replica still runs. A replica
// whose heartbeat cannot be read is not counted.
func (c StreamConfig) WithLiveReplicas(ctx context.Context, js jetstream.JetStream, bucket, self string, log zerolog.Logger) StreamConfig {
	c.Subjects = slices.Clone(c.Subjects)
	replicas, err := replica.Read(ctx, js, bucket)
	keep := err != nil
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the other replicas' workflows: the leads stream keeps every subject it captures")
	}
	for _, r := range replicas {
		if r.Replica == self {
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
		if st, err := js.Stream(ctx, c.Name); err == nil && st.CachedInfo().Config.Metadata[ManagedByKey] == ManagedByValue {
			c.Subjects = append(c.Subjects, st.CachedInfo().Config.Subjects...)
		}
	}
	return c
}
