package leads

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// MaxDeliveryTarget names a consumer whose given-up messages are
// dead-lettered, and where to.
type MaxDeliveryTarget struct {
	Consumer          string // durable consumer name
	Workflow          string // workflow the consumer feeds
	DeadLetterSubject string // default dlq.<workflow>
	// ReplayKey verifies the replay headers of the message, so a replay's
	// dead letter keeps the original identity and history; nil: a message
	// with replay headers is taken as a new event.
	ReplayKey *dlq.ReplayKey
}

// maxDeliveriesAdvisory is the part of JetStream's
// io.nats.jetstream.advisory.v1.max_deliver advisory we read.
type maxDeliveriesAdvisory struct {
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Time       time.Time `json:"timestamp"`
}

// maxDeliveriesAdvisorySubject is where JetStream announces that a consumer
// stopped redelivering a message.
func maxDeliveriesAdvisorySubject(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// advisoryBackoff retries dead-lettering an advisory's message 6 times,
// waiting 100ms and doubling, before it is given up (logged).
var advisoryBackoff = loop.Policy{MaxAttempts: 6, InitialDelay: 100 * time.Millisecond, Multiplier: 2, Jitter: -1}

// WatchMaxDeliveries subscribes to
// $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer> for the
// given consumers, fetches the message by the advisory's stream_seq (the
// advisory carries only the sequence), and dead-letters it with
// [outcome.MaxDeliveries] to the consumer's dead-letter subject. It returns
// when ctx is done (nil), or an error if it cannot subscribe.
//
// Advisories are core NATS messages: one published while no watcher runs is
// lost, and every replica running a watcher receives each one. The
// dead-letter Nats-Msg-Id makes those copies one entry. A message already
// gone from the stream (limits, interest retention) is logged and skipped.
// Advisories are handled one at a time on the calling goroutine.
func WatchMaxDeliveries(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, stream string, targets []MaxDeliveryTarget, log zerolog.Logger) error {
	if stream == "" {
		return errors.New("leads: watch max deliveries: empty stream name")
	}
	byConsumer := make(map[string]MaxDeliveryTarget, len(targets))
	ch := make(chan *nats.Msg, 1024)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, t := range targets {
		if t.Consumer == "" || t.Workflow == "" {
			return fmt.Errorf("leads: watch max deliveries: target %+v needs a consumer and a workflow", t)
		}
		if t.DeadLetterSubject == "" {
			t.DeadLetterSubject = dlq.Subject(t.Workflow)
		}
		byConsumer[t.Consumer] = t
		sub, err := nc.ChanSubscribe(maxDeliveriesAdvisorySubject(stream, t.Consumer), ch)
		if err != nil {
			return fmt.Errorf("leads: watch max deliveries of %s: %w", t.Consumer, err)
		}
		subs = append(subs, sub)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("leads: watch max deliveries: %w", err)
	}
	var s jetstream.Stream
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			var adv maxDeliveriesAdvisory
			if err := json.Unmarshal(m.Data, &adv); err != nil {
				log.Error().Err(err).Str("subject", m.Subject).Msg("max deliveries advisory unreadable")
				continue
			}
			t, ok := byConsumer[adv.Consumer]
			if !ok {
				continue
			}
			l := log.With().Str("workflow", t.Workflow).Str("consumer", t.Consumer).Uint64("stream_seq", adv.StreamSeq).Logger()
			if s == nil {
				var err error
				if s, err = js.Stream(ctx, stream); err != nil {
					l.Error().Err(err).Msg("max deliveries: cannot open stream; message not dead-lettered")
					continue
				}
			}
			if err := deadLetterMaxDelivered(ctx, js, s, t, adv); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				l.Error().Err(err).Msg("max deliveries: message not dead-lettered")
				continue
			}
			l.Warn().Uint64("deliveries", adv.Deliveries).Str("class", outcome.MaxDeliveries.String()).Msg("dead-lettered: JetStream stopped redelivering")
		}
	}
}

// deadLetterMaxDelivered copies the advisory's message into the dead-letter
// stream, retrying transient failures with backoff.
func deadLetterMaxDelivered(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, t MaxDeliveryTarget, adv maxDeliveriesAdvisory) error {
	var err error
	for attempt := 1; attempt <= advisoryBackoff.MaxAttempts; attempt++ {
		var m *jetstream.RawStreamMsg
		m, err = s.GetMsg(ctx, adv.StreamSeq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("leads: message %d is no longer in the stream: %w", adv.StreamSeq, err)
		}
		if err == nil {
			when := adv.Time
			if when.IsZero() {
				when = time.Now()
			}
			rp, _ := t.ReplayKey.ReadReplay(m.Subject, m.Header, m.Data) // the worker logged a forged marker
			payload, obj := m.Data, ""
			if rp != nil && rp.Object != "" {
				// A replay too large for one message: the dead letter takes
				// over its payload and items.
				o, oerr := dlq.LoadReplayObject(ctx, js, rp.Object)
				if err = oerr; err == nil {
					payload, rp.Items, obj = o.Payload, o.Items, rp.Object
				} else if errors.Is(err, dlq.ErrObjectGone) {
					err = nil // dead-lettered without it: the error says so
				}
			}
			if err == nil {
				r := EventRecord(rp, m.Subject, s.CachedInfo().Config.Name, m.Sequence, m.Header, payload)
				r.Workflow = t.Workflow
				r.Class = outcome.MaxDeliveries
				r.Error = fmt.Sprintf("leads: JetStream stopped redelivering after %d deliveries to consumer %s (the worker crashed, hung or never acknowledged it)",
					adv.Deliveries, t.Consumer)
				if rp != nil && rp.Object != "" && obj == "" {
					r.Error += "; its replay object " + rp.Object + " is gone, and the payload with it"
				}
				r.Attempts = int(adv.Deliveries)
				r.LastFailure = when
				if err = dlq.Publish(ctx, js, t.DeadLetterSubject, r); err == nil {
					if obj != "" {
						_ = dlq.DeleteReplayObject(ctx, js, obj)
					}
					return nil
				}
			}
		}
		if attempt == advisoryBackoff.MaxAttempts {
			break
		}
		timer := time.NewTimer(advisoryBackoff.Backoff(attempt, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
	return err
}
