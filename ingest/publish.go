package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/eventid"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// Publisher defaults, used for a zero field.
const (
	// PublishTimeoutDefault bounds waiting for JetStream to acknowledge
	// every event of one Publish.
	PublishTimeoutDefault = 30 * time.Second
	// WindowDefault is how many publishes may await their acknowledgement
	// at once.
	WindowDefault = 256
)

// jsErrCodeHeaderExceedsMaximum is JetStream's refusal of a message whose
// headers are over 64 KiB.
const jsErrCodeHeaderExceedsMaximum = 10097

// msgSize is the size the server counts for ev published to subject by a
// [Publisher]: its headers as encoded (a Nats-Msg-Id) and its data.
func msgSize(subject string, ev Event) int {
	return len("NATS/1.0\r\n") + len(nats.MsgIdHdr) + len(": \r\n") + len(textproto.TrimString(eventid.MsgID(subject, ev.ID, ev.Data))) + len("\r\n") + len(ev.Data)
}

// Publisher publishes events to JetStream, each with the Nats-Msg-Id
// [eventid.MsgID] makes of the subject, its ID and its data (the same ID on
// another subject, or with another body, is another event; an exact resend
// a duplicate), asynchronously with a bounded window. A Publisher holds no state between
// calls: it is safe for concurrent use when its JetStream and Progress are.
type Publisher struct {
	JS jetstream.JetStream
	// Timeout bounds one Publish; PublishTimeoutDefault when zero.
	Timeout time.Duration
	// Window is how many publishes await their acknowledgement at once;
	// WindowDefault when zero.
	Window int
	// Progress, when set, is called with 1 for each acknowledged event.
	Progress func(n int)
}

// Result is what one Publish stored. JSON names are part of the `publish
// --json` output.
type Result struct {
	Subject    string `json:"subject"`
	Published  int    `json:"published"`  // stored as new events
	Duplicates int    `json:"duplicates"` // already stored before: dropped by de-duplication
	// Sequences are the stream sequences of the events acknowledged, in
	// order; a duplicate's is that of the event stored first.
	Sequences []uint64 `json:"-"`
}

// Publish sends evs to subject and waits for every acknowledgement; an event
// is counted only once JetStream stored it (or reported it a duplicate). On
// an error the Result counts what was acknowledged before it.
func (p Publisher) Publish(ctx context.Context, subject string, evs []Event) (Result, error) {
	res := Result{Subject: subject}
	timeout := cmp.Or(p.Timeout, PublishTimeoutDefault)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	window := cmp.Or(p.Window, WindowDefault)
	progress := p.Progress
	if progress == nil {
		progress = func(int) {}
	}
	pending := make([]jetstream.PubAckFuture, 0, window)
	pendingEvs := make([]Event, 0, window)
	flush := func() error {
		for i, fut := range pending {
			select {
			case ack := <-fut.Ok():
				res.Sequences = append(res.Sequences, ack.Sequence)
				if ack.Duplicate {
					res.Duplicates++
				} else {
					res.Published++
				}
			case err := <-fut.Err():
				if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
					return fmt.Errorf("ingest: publish to %s: %w: start 'kustomer-sync run' once with a workflow on this subject (it creates the LEADS stream on its workflows' subjects), or publish to a subject your stream captures", subject, ErrNoStream)
				}
				return fmt.Errorf("ingest: publish line %d to %s: %w", pendingEvs[i].Line, subject, err)
			case <-ctx.Done():
				return fmt.Errorf("ingest: no acknowledgement from JetStream within %s (is a stream bound to %s?): %w", timeout, subject, ctx.Err())
			}
			progress(1)
		}
		pending, pendingEvs = pending[:0], pendingEvs[:0]
		return nil
	}
	// Traced (the caller's context holds a recording span): each event
	// carries the trace context of this publish's span, for the worker to
	// continue.
	ctx, span := tracing.Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		tracing.AttrMessagingSystem.String("nats"), tracing.AttrOperation.String("send"),
		tracing.AttrDestination.String(subject), attribute.Int("messaging.batch.message_count", len(evs))))
	defer span.End()
	for _, ev := range evs {
		m := nats.NewMsg(subject)
		m.Data = ev.Data
		m.Header.Set(nats.MsgIdHdr, eventid.MsgID(subject, ev.ID, ev.Data))
		tracing.Inject(ctx, m.Header)
		fut, err := p.JS.PublishMsgAsync(m)
		if err != nil {
			return res, fmt.Errorf("ingest: publish line %d: %w", ev.Line, err)
		}
		pending = append(pending, fut)
		pendingEvs = append(pendingEvs, ev)
		if len(pending) == window {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	return res, flush()
}
