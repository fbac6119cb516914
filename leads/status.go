package leads

import (
	"cmp"
	"context"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/replica"
)

// StatusConfig names what [CollectStatus] reads; the zero value reads the
// defaults.
type StatusConfig struct {
	Stream           string // the leads stream; default StreamDefault
	DeadLetterStream string // default dlq.StreamDefault
	ReplicasBucket   string // default replica.BucketDefault
}

// CollectStatus reads the replicas' states, the workflows' consumers and the
// dead letters ([replica.CollectStatus]), knowing a workflow's consumer as
// [EnsureConsumer] made it (its workflow and the events it skipped, in its
// metadata). It costs a few JetStream requests plus one scan of the
// dead-letter stream.
func CollectStatus(ctx context.Context, js jetstream.JetStream, cfg StatusConfig) (replica.Status, error) {
	return replica.CollectStatus(ctx, js, replica.StatusConfig{
		Stream:           cmp.Or(cfg.Stream, StreamDefault),
		DeadLetterStream: cfg.DeadLetterStream,
		ReplicasBucket:   cfg.ReplicasBucket,
		Workflow:         ConsumerWorkflow,
		Skipped: func(info *jetstream.ConsumerInfo) uint64 {
			n, _ := strconv.ParseUint(info.Config.Metadata[SkippedKey], 10, 64)
			return n
		},
	})
}
