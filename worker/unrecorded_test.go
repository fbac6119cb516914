package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// kvRecordsFail is a ledger bucket whose first records of a created
// customer fail, as during a JetStream leader change that outlasts record's
// tries.
type kvRecordsFail struct {
	jetstream.KeyValue
	failures atomic.Int32
}

func (k *kvRecordsFail) Put(ctx context.Context, key string, v []byte) (uint64, error) {
	if strings.HasPrefix(string(v), "created ") && k.failures.Add(-1) >= 0 {
		return 0, errors.New("nats: no responders available for request")
	}
	return k.KeyValue.Put(ctx, key, v)
}

// wrap makes the worker's ledger write through k.
func (k *kvRecordsFail) wrap(c *Config) {
	c.Ledger.WrapKV = func(kv jetstream.KeyValue) jetstream.KeyValue { k.KeyValue = kv; return k }
}

// A customer created but not recorded in the ledger is not acknowledged:
// the event comes back, the customer is found by its externalId and
// recorded, and the lead exists once.
func TestACustomerTheLedgerCannotRecordLeavesTheEventUnacknowledgedUntilItIs(t *testing.T) {
	t.Parallel()
	kv := &kvRecordsFail{}
	kv.failures.Store(ledger.RecordTries) // every try of the first record
	h := setup(t, harnessOptions{config: leadConfig(), worker: kv.wrap})
	seq := h.publish("leads.web", "unrecorded-1", `{"id":"ur-1","name":"Ann"}`)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, outcome.AlreadyCreated, rec.Items[0].Outcome, "the redelivery found it")
	require.Equal(t, fmt.Sprintf("%s-%d-2-default", leads.StreamDefault, seq), rec.ID, "the run of the second delivery: the first was not acknowledged")
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ur-1"])
	got, err := kv.KeyValue.Get(context.Background(), ledger.Key("", "ur-1"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(got.Value()), "created "), "recorded at last: %s", got.Value())
}

// The same in bulk mode: the job created the customer, the ledger could
// not record it, and the event waits for its redelivery, which reads the
// job again.
func TestABulkCustomerTheLedgerCannotRecordLeavesTheEventUnacknowledgedUntilItIs(t *testing.T) {
	t.Parallel()
	kv := &kvRecordsFail{}
	kv.failures.Store(ledger.RecordTries)
	h := setup(t, harnessOptions{config: bulkLoopConfig, sandbox: sandbox.Config{BulkDelay: 20 * time.Millisecond}, worker: kv.wrap})
	seq := h.publish("leads.web", "unrecorded-2", leadsEvent("a"))
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, fmt.Sprintf("%s-%d-2-bulk", leads.StreamDefault, seq), rec.ID, "the run of the second delivery")
	require.Equal(t, 1, h.sb.Sandbox.CountByExternalID()["ext-a"])
	require.Equal(t, 1, h.sb.Sandbox.Stats().BulkJobs, "the redelivery read the job its claim names")
}
