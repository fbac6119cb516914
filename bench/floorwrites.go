package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// PipelineFloorWrites is the floor plus the JetStream writes per-item mode
// makes for each customer, and nothing else of the worker: the ledger
// claim before the POST, the ledger record after it, the result and the
// run record, each stored before the next step as the guarantees require.
// What per-item mode spends beyond it is the worker's own work.
const PipelineFloorWrites = "floor+writes"

// floorWrites makes, for the floor, the writes per-item mode makes per
// customer, to streams configured as the worker's (file storage, the
// ledger's age, the results' duplicate window, the run log's subjects).
type floorWrites struct {
	js      jetstream.JetStream
	ledger  jetstream.KeyValue
	runs    *runlog.Log
	results string // subject
	stored  atomic.Int64
}

func newFloorWrites(ctx context.Context, js jetstream.JetStream) (*floorWrites, error) {
	ledger, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ledger.BucketDefault, TTL: ledger.TTLDefault, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: floor+writes ledger: %w", err)
	}
	if _, err := js.CreateStream(ctx, result.Stream(result.StreamDefault, 1, []string{result.SubjectsDefault})); err != nil {
		return nil, fmt.Errorf("bench: floor+writes results: %w", err)
	}
	runs, err := runlog.New(ctx, js, runlog.Config{})
	if err != nil {
		return nil, fmt.Errorf("bench: floor+writes run log: %w", err)
	}
	return &floorWrites{js: js, ledger: ledger, runs: runs, results: "kustomer.customers.created.floor"}, nil
}

// claim is the ledger claim made before the POST, under the key the
// worker would use for a lead whose idempotency key is id.
func (w *floorWrites) claim(ctx context.Context, id string) (key string, err error) {
	sum := sha256.Sum256([]byte(id))
	key = "item." + hex.EncodeToString(sum[:16])
	if _, err = w.ledger.Create(ctx, key, []byte("claim floor "+time.Now().Add(ledger.LeaseDefault).UTC().Format(time.RFC3339Nano))); err == nil {
		w.stored.Add(1)
	}
	return key, err
}

// created records the customer in the ledger, publishes its result and
// writes the run record once the result is stored, as per-item mode does
// after a 201.
func (w *floorWrites) created(ctx context.Context, msg jetstream.Msg, key string, body, answer []byte) error {
	var c struct {
		Data struct {
			ID         string          `json:"id"`
			Attributes json.RawMessage `json:"attributes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(answer, &c); err != nil || c.Data.ID == "" {
		return fmt.Errorf("bench: floor+writes: no customer id in %q", answer)
	}
	sum := sha256.Sum256(body)
	sent := hex.EncodeToString(sum[:16])
	meta, err := msg.Metadata()
	if err != nil {
		return err
	}
	if _, err := w.ledger.Put(ctx, key, []byte("created "+c.Data.ID+" "+sent)); err != nil {
		return err
	}
	res, err := result.Result{
		Workflow: "floor", EventID: msg.Headers().Get(nats.MsgIdHdr), StreamSeq: meta.Sequence.Stream,
		CustomerID: c.Data.ID, Outcome: outcome.Created, Attributes: c.Data.Attributes, Sent: sent,
	}.Msg(w.results)
	if err != nil {
		return err
	}
	ack, err := w.js.PublishMsgAsync(res)
	if err != nil {
		return err
	}
	select {
	case <-ack.Ok():
	case err := <-ack.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	now := time.Now()
	err = w.runs.Write(ctx, runlog.Record{
		ID:       fmt.Sprintf("%s-%d-%d-floor", meta.Stream, meta.Sequence.Stream, meta.NumDelivered),
		Workflow: "floor", Status: runlog.Succeeded, Subject: msg.Subject(), StreamSeq: meta.Sequence.Stream,
		Started: now, Ended: now,
		Items: []runlog.Item{{Index: 0, Outcome: outcome.Created, CustomerID: c.Data.ID, Attempts: 1}},
	})
	if err == nil {
		w.stored.Add(3)
	}
	return err
}
