package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// bulkFaultConfig is faultConfig in bulk mode.
const bulkFaultConfig = `workflows:
  - name: faults
    subject: "leads.>"
    loop: "{{trigger.leads}}"
    mode: bulk
    linger: 100ms
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
      emails: "{{item.email}}"
`

func TestFaultWorkerKilledWhileABulkJobIsInFlightThenRestartedCreatesEveryLeadOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(r.config), "bulk.yaml"), []byte(bulkFaultConfig), 0o600))
	r.config = filepath.Join(filepath.Dir(r.config), "bulk.yaml")
	f := r.sb.Sandbox.Faults()
	f.BulkDelay = 2 * time.Second
	r.sb.Sandbox.SetFaults(f)

	first := r.startWorker("bulk-kill-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 20, 15)
	// Every lead is in a submitted job: its claim names the bulk request,
	// under whose token the ledger records the job's id; no job is done yet.
	ctx := context.Background()
	require.Eventually(t, func() bool {
		r.requireWorkersAlive()
		kv, err := js.KeyValue(ctx, worker.LedgerBucketDefault)
		if err != nil {
			return false
		}
		keys, err := kv.Keys(ctx)
		if err != nil {
			return false
		}
		var claims int
		jobs := map[string]bool{}
		requests := map[string]bool{}
		for _, k := range keys {
			e, err := kv.Get(ctx, k)
			if err != nil {
				return false
			}
			v := string(e.Value())
			if token, ok := strings.CutPrefix(k, "bulkbatch."); ok {
				jobs[token] = v != ""
				continue
			}
			_, token, ok := strings.Cut(v, " batch:")
			if !ok {
				return false
			}
			claims++
			requests[token] = true
		}
		for token := range requests {
			if !jobs[token] {
				return false
			}
		}
		return claims == len(r.ids)
	}, faultDeadline, faultPoll, "the claims never named bulk requests whose jobs the ledger records\n%s", r.logs())
	first.kill(t)
	sent := r.sb.Sandbox.Stats().BulkJobs
	require.Less(t, len(r.sb.Sandbox.Customers()), len(r.ids), "the kill must land before the jobs are done")

	r.startWorker("bulk-kill-2") // a restarted process is a new replica
	r.waitDone(js)
	r.requireExactlyOnce(js)
	st := r.sb.Sandbox.Stats()
	t.Logf("bulk jobs: %d before the kill, %d in all; polls %d; look-ups %d", sent, st.BulkJobs, st.BulkPolls, st.Lookups)
	require.Zero(t, st.Duplicates)
	require.Equal(t, len(r.ids), st.Creates, "no item was sent twice")
	require.Equal(t, 2, st.Lookups, "the start probes only: the new replica read the dead one's jobs instead of looking items up")
	r.stopWorkers()
}
