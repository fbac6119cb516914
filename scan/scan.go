// Package scan reads what a JetStream stream holds, once, in order: the one
// way the dead-letter tools (dlq) and the run log (worker) list their
// streams. A scan goes through an ordered consumer (nats.go's
// jetstream.OrderedConsumer): ephemeral, in memory, unacknowledged, and
// recreated by the library where it left off if a message goes missing or
// the connection drops, so a listing never skips or repeats an entry.
package scan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options select the messages a scan reads. The zero value reads them all.
type Options struct {
	// Filter is a subject filter; "" reads every subject.
	Filter string
	// StartSeq starts at this stream sequence; 0 at the first message (or
	// at Since).
	StartSeq uint64
	// Since starts at the first message stored at or after it; ignored
	// when StartSeq is set.
	Since time.Time
}

// idle is how long a scan waits for a message it was told is pending (a
// purge meanwhile can take it away) before it ends.
const idle = 5 * time.Second

// inactive is when the server removes a scan's consumer that was not
// deleted (the process died mid-scan).
const inactive = time.Minute

// Stream calls fn for each message of s that opts select, oldest first,
// until those pending when the scan began are read. An error from fn stops
// the scan and is returned as it is. The consumer is deleted on return.
// Stream is safe for concurrent use; each call has its own consumer.
func Stream(ctx context.Context, s jetstream.Stream, opts Options, fn func(*jetstream.RawStreamMsg) error) error {
	name := s.CachedInfo().Config.Name
	cfg := jetstream.OrderedConsumerConfig{InactiveThreshold: inactive, DeliverPolicy: jetstream.DeliverAllPolicy}
	if opts.Filter != "" {
		cfg.FilterSubjects = []string{opts.Filter}
	}
	switch {
	case opts.StartSeq != 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.StartSeq
	case !opts.Since.IsZero():
		since := opts.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("scan: stream %s: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("scan: stream %s: %w", name, err)
	}
	info := cons.CachedInfo()
	defer func() {
		it.Stop()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if info := cons.CachedInfo(); info != nil {
			_ = s.DeleteConsumer(dctx, info.Name)
		}
	}()
	if info == nil || info.NumPending == 0 {
		return nil
	}
	for {
		m, err := next(ctx, it)
		switch {
		case errors.Is(err, nats.ErrTimeout):
			return nil // what was pending is gone (purged)
		case err != nil:
			return fmt.Errorf("scan: stream %s: %w", name, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("scan: stream %s: %w", name, err)
		}
		raw := &jetstream.RawStreamMsg{
			Subject:  m.Subject(),
			Sequence: meta.Sequence.Stream,
			Header:   m.Headers(),
			Data:     m.Data(),
			Time:     meta.Timestamp,
		}
		if err := fn(raw); err != nil {
			return err
		}
		if meta.NumPending == 0 {
			return nil
		}
	}
}

// next is the iterator's next message, waiting at most idle, or ctx's error.
func next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wait, cancel := context.WithTimeout(ctx, idle)
	defer cancel()
	m, err := it.Next(jetstream.NextContext(wait))
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, nats.ErrTimeout
	}
	return m, err
}
