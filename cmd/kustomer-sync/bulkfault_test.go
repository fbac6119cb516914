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

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// newBulkFaultRun is a fault run of config (a bulk workflow) whose
// sandbox has the bulk faults fault sets.
func newBulkFaultRun(t *testing.T, config string, fault func(*sandbox.Faults)) (*faultRun, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	r.config = filepath.Join(filepath.Dir(r.config), "bulk.yaml")
	require.NoError(t, os.WriteFile(r.config, []byte(config), 0o600))
	f := r.sb.Sandbox.Faults()
	fault(&f)
	r.sb.Sandbox.SetFaults(f)
	return r, js
}

// waitBulkRequests waits until every lead's claim names a bulk request
// whose ledger record starts with state: "sending " until Kustomer
// answered, then "job " and the job's id.
func (r *faultRun) waitBulkRequests(js jetstream.JetStream, state string, poll time.Duration, why string) {
	r.t.Helper()
	ctx := context.Background()
	require.Eventually(r.t, func() bool {
		r.requireWorkersAlive()
		claims, requests, ok := bulkLedger(ctx, js)
		if !ok || len(claims) != len(r.ids) {
			return false
		}
		for _, token := range claims {
			if !strings.HasPrefix(requests[token], state) {
				return false
			}
		}
		return true
	}, faultDeadline, poll, "%s\n%s", why, r.logs())
}

func TestFaultWorkerKilledWhileABulkJobIsInFlightThenRestartedCreatesEveryLeadOnce(t *testing.T) {
	t.Parallel()
	r, js := newBulkFaultRun(t, mappingtest.Workflow("faults-bulk"), func(f *sandbox.Faults) { f.BulkDelay = 4 * time.Second })
	first := r.startWorker("bulk-kill-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 20, 15)
	// Every lead is in a submitted job: its claim names the bulk request,
	// under whose token the ledger records the job's id; no job is done yet.
	r.waitBulkRequests(js, "job ", faultPoll, "the claims never named bulk requests whose jobs the ledger records")
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
// what is recorded of each request ("sending …", "job …"). It reads every
// entry in one watch, not one request per key: under load a key-by-key
// read of hundreds of entries took longer than the jobs the tests race.
func bulkLedger(ctx context.Context, js jetstream.JetStream) (claims map[string]string, requests map[string]string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, ledger.BucketDefault)
	if err != nil {
		return nil, nil, false
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, false
	}
	defer func() { _ = w.Stop() }()
	claims, requests = map[string]string{}, map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return nil, nil, false
		case e := <-w.Updates():
			if e == nil { // every current entry read
				return claims, requests, true
			}
			v := string(e.Value())
			if token, ok := strings.CutPrefix(e.Key(), "bulkbatch."); ok {
				requests[token] = v
				continue
			}
			if _, token, ok := strings.Cut(v, " batch:"); ok {
				claims[e.Key()] = token
			}
		}
	}
}

// SIGKILL after the bulk requests were sent and before Kustomer's answers
// (late here) recorded their job ids: the restarted replica cannot name
// the jobs, which run for 4 s. It neither looks the items up nor sends
// them again until Kustomer can no longer be running them (sent + the 2 s
// client timeout + bulk_job_timeout 5s), then finds every one by look-up.
func TestFaultWorkerKilledBeforeTheBulkJobIDIsRecordedNeverSendsTheItemsAgain(t *testing.T) {
	t.Parallel()
	config := strings.Replace(mappingtest.Workflow("faults-bulk"), "    linger: 100ms\n", "    linger: 100ms\n    bulk_job_timeout: 5s\n", 1)
	r, js := newBulkFaultRun(t, config, func(f *sandbox.Faults) { f.BulkDelay, f.BulkSubmitLate = 4*time.Second, 1500*time.Millisecond })
	first := r.startWorker("bulk-early-kill-1")
	r.waitStream(js)
	r.publishLeads(js, 0, 10, 10)
	r.waitBulkRequests(js, "sending ", faultPoll/5, "the requests were never all sent and unanswered at once")
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
