package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/natstest"
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
		kv, err := js.KeyValue(ctx, ledger.BucketDefault)
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
				jobs[token] = strings.HasPrefix(v, "job ") // "sending …" until Kustomer answered
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

// bulkLedger reads the ledger: the bulk request each claim names, and
// what is recorded of each request ("sending …", "job …").
func bulkLedger(ctx context.Context, js jetstream.JetStream) (claims map[string]string, requests map[string]string, ok bool) {
	kv, err := js.KeyValue(ctx, ledger.BucketDefault)
	if err != nil {
		return nil, nil, false
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		return nil, nil, false
	}
	claims, requests = map[string]string{}, map[string]string{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return nil, nil, false
		}
		v := string(e.Value())
		if token, ok := strings.CutPrefix(k, "bulkbatch."); ok {
			requests[token] = v
			continue
		}
		if _, token, ok := strings.Cut(v, " batch:"); ok {
			claims[k] = token
		}
	}
	return claims, requests, true
}

// SIGKILL after the bulk requests were sent and before Kustomer's answers
// (late here) recorded their job ids: the restarted replica cannot name
// the jobs, which run for 4 s. It neither looks the items up nor sends
// them again until Kustomer can no longer be running them (sent + the 2 s
// client timeout + bulk_job_timeout 5s), then finds every one by look-up.
func TestFaultWorkerKilledBeforeTheBulkJobIDIsRecordedNeverSendsTheItemsAgain(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	config := strings.Replace(bulkFaultConfig, "    linger: 100ms\n", "    linger: 100ms\n    bulk_job_timeout: 5s\n", 1)
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(r.config), "bulk.yaml"), []byte(config), 0o600))
	r.config = filepath.Join(filepath.Dir(r.config), "bulk.yaml")
	f := r.sb.Sandbox.Faults()
	f.BulkDelay, f.BulkSubmitLate = 4*time.Second, 1500*time.Millisecond
	r.sb.Sandbox.SetFaults(f)

	first := r.startWorker("bulk-early-kill-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 10, 10)
	ctx := context.Background()
	require.Eventually(t, func() bool {
		r.requireWorkersAlive()
		claims, requests, ok := bulkLedger(ctx, js)
		if !ok || len(claims) != len(r.ids) {
			return false
		}
		for _, token := range claims {
			if !strings.HasPrefix(requests[token], "sending ") {
				return false
			}
		}
		return true
	}, faultDeadline, faultPoll/5, "the requests were never all sent and unanswered at once\n%s", r.logs())
	first.kill(t)
	require.Empty(t, r.sb.Sandbox.Customers(), "the kill lands while the jobs run")

	r.startWorker("bulk-early-kill-2")
	r.waitDone(js)
	r.requireExactlyOnce(js)
	st := r.sb.Sandbox.Stats()
	t.Logf("bulk jobs %d, polls %d, look-ups %d", st.BulkJobs, st.BulkPolls, st.Lookups)
	require.Zero(t, st.Duplicates)
	require.Equal(t, len(r.ids), st.Creates, "no item was sent twice")
	require.Equal(t, 2+len(r.ids), st.Lookups, "the start probes, then one look-up per item once the jobs could no longer run")
	r.stopWorkers()
}
