// Package result is what downstream consumers read of a customer created,
// found or updated: one message per item on the workflow's results subject,
// in the results stream, with the seed's "Returns" body
// ({"data":{"id":…,"attributes":{…}}}) and headers that link it to the
// event it came from.
package result

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// The results stream: where created customers' results are published.
const (
	// StreamDefault keeps the results of created customers for downstream
	// consumers.
	StreamDefault = "KSYNC_RESULTS"
	// SubjectsDefault are the subjects the results stream captures.
	SubjectsDefault = "kustomer.customers.created.>"
	// MaxAgeDefault is how long results are kept.
	MaxAgeDefault = 7 * 24 * time.Hour
	// DedupWindow is how long the results stream remembers a result's
	// Nats-Msg-Id: a redelivered event's result is stored once.
	DedupWindow = 10 * time.Minute
)

// Result headers link a published result to the event it came from; the
// workflow and stream sequence use the names dead letters use.
const (
	HeaderEventID  = "Ksync-Event-Id"
	HeaderEventSeq = dlq.HeaderStreamSeq
	HeaderItem     = "Ksync-Item"
	HeaderWorkflow = dlq.HeaderWorkflow
	HeaderCustomer = "Ksync-Customer-Id"
	// HeaderOutcome says what became of the customer: created,
	// already_created, updated or skipped.
	HeaderOutcome = "Ksync-Outcome"
	// HeaderTraceID names the trace of the event the result came from (as
	// the run record and the dead letter do); the result also carries the
	// event span's traceparent, for its consumers to continue the trace.
	HeaderTraceID = "Ksync-Trace-Id"
	msgIDPrefix   = "ksync-result-"
)

// Stream is the results stream's config: named name, capturing subjects,
// with replicas copies.
func Stream(name string, replicas int, subjects []string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "kustomer-sync: customers created, for downstream consumers",
		Subjects:    subjects,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      MaxAgeDefault,
		Duplicates:  DedupWindow,
	}
}

// Result is one item's result.
type Result struct {
	Workflow string
	// EventID is the publisher's id of the event, of any length.
	EventID    string
	StreamSeq  uint64 // the event's sequence in the leads stream
	Item       int    // the item's index in the event's Loop
	CustomerID string
	Outcome    outcome.Outcome
	// Attributes are the customer's, as Kustomer answered (or as sent,
	// when its answer had none).
	Attributes json.RawMessage
	// Sent is the hash of the body sent for the item: an update is a
	// result of its own.
	Sent string
}

// body is what downstream consumers read: the seed's "Returns" shape.
type body struct {
	Data data `json:"data"`
}

type data struct {
	ID         string          `json:"id"`
	Attributes json.RawMessage `json:"attributes"`
}

// Msg is r as the message to publish on subject.
func (r Result) Msg(subject string) (*nats.Msg, error) {
	b, err := json.Marshal(body{Data: data{ID: r.CustomerID, Attributes: r.Attributes}})
	if err != nil {
		return nil, fmt.Errorf("result: encode: %w", err)
	}
	m := nats.NewMsg(subject)
	m.Data = b
	m.Header.Set(HeaderWorkflow, r.Workflow)
	// The publisher's id, of any length: a long one as its digest, so the
	// result's headers stay within JetStream's limit.
	m.Header.Set(HeaderEventID, dlq.BoundedValue(r.EventID))
	m.Header.Set(HeaderEventSeq, strconv.FormatUint(r.StreamSeq, 10))
	m.Header.Set(HeaderItem, strconv.Itoa(r.Item))
	m.Header.Set(HeaderCustomer, r.CustomerID)
	m.Header.Set(HeaderOutcome, r.Outcome.String())
	// A redelivery of the same event publishes the same result, which
	// JetStream stores once; another event's item (the same person again,
	// even with the same body) is a result of its own, and so is an update
	// (the body sent is part of the id). The event's id is a publisher's
	// text of any length: it goes in hashed.
	m.Header.Set(nats.MsgIdHdr, msgID(r.Workflow, r.EventID, r.Item, r.CustomerID, r.Sent))
	return m, nil
}

// msgID is the Nats-Msg-Id of an item's result: its workflow, event and
// index, the customer and the hash of the body sent.
func msgID(workflow, event string, index int, customerID, sent string) string {
	sum := sha256.Sum256([]byte(event + "#" + strconv.Itoa(index)))
	return msgIDPrefix + workflow + "-" + hex.EncodeToString(sum[:12]) + "-" + customerID + "-" + sent
}

const (
	// InFlight bounds an event's results published and not yet stored,
	// well under the connection's limit of pending asynchronous publishes
	// (4,000), past which a publish would stall and fail.
	InFlight = 256
	// AckWait bounds the wait for JetStream to store an event's results.
	AckWait = 10 * time.Second
)

// Batch publishes an event's results without waiting for each to be
// stored, at most [InFlight] at a time; Wait waits for the rest. Not safe
// for concurrent use.
type Batch struct {
	js   jetstream.JetStream
	acks []jetstream.PubAckFuture
}

// NewBatch returns a batch that publishes with js.
func NewBatch(js jetstream.JetStream) *Batch { return &Batch{js: js} }

// Publish publishes m without waiting for its acknowledgement, unless
// [InFlight] results are then waiting for theirs: it then waits until they
// are stored, for at most [AckWait].
func (b *Batch) Publish(ctx context.Context, m *nats.Msg) error {
	ack, err := b.js.PublishMsgAsync(m)
	if err != nil {
		return fmt.Errorf("result: publish: %w", err)
	}
	b.acks = append(b.acks, ack)
	if len(b.acks) < InFlight {
		return nil
	}
	return b.Wait(ctx)
}

// Wait waits until JetStream has stored every result published, for at
// most [AckWait].
func (b *Batch) Wait(ctx context.Context) error {
	err := await(ctx, b.acks, AckWait)
	b.acks = b.acks[:0]
	return err
}

// await waits until JetStream has stored every message of acks, for at
// most timeout.
func await(ctx context.Context, acks []jetstream.PubAckFuture, timeout time.Duration) error {
	if len(acks) == 0 {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			return fmt.Errorf("result: publish: %w", err)
		case <-t.C:
			return fmt.Errorf("result: publish: not stored within %s", timeout)
		case <-ctx.Done():
			return fmt.Errorf("result: publish: %w", ctx.Err())
		}
	}
	return nil
}
