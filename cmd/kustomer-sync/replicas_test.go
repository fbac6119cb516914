package main

// Issue 21: several replicas of one deployment, on one host or running
// different configs, never take work, subjects or ports from each other.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// cliStatus runs `status --json` against natsURL in this process.
func cliStatus(t *testing.T, natsURL string) replica.Status {
	t.Helper()
	var out, errOut bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"status", "--json", "--nats-url", natsURL}, strings.NewReader(""), &out, &errOut), errOut.String())
	var st replica.Status
	require.NoError(t, json.Unmarshal(out.Bytes(), &st), out.String())
	return st
}

func TestASecondReplicaOnOneHostRunsWithoutAnAdminServerWhenTheDefaultAddressIsTaken(t *testing.T) {
	t.Parallel()
	// Whoever holds the default address (another replica, or this test),
	// it is taken while the replica starts.
	if ln, err := net.Listen("tcp", admin.AddrDefault); err == nil {
		t.Cleanup(func() { _ = ln.Close() })
	} else {
		require.True(t, errors.Is(err, syscall.EADDRINUSE), "listen on %s: %v", admin.AddrDefault, err)
	}
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	r.env = []string{"KSYNC_ADMIN_ADDR="} // unset: the default address
	r.startWorker("second-on-host")
	r.waitWorkflows(js, "second-on-host", faultWorkflow)
	r.publishLeads(js, 0, 1, 2)
	r.waitDone(js)

	st := cliStatus(t, srv.ClientURL())
	require.Len(t, st.Replicas, 1)
	require.Empty(t, st.Replicas[0].Admin, "status says the replica has no admin server")
	var text bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"status", "--nats-url", srv.ClientURL()}, strings.NewReader(""), &text, &text))
	require.Contains(t, text.String(), "Replica second-on-host has no admin server")

	// An address given explicitly still fails loudly (one this test holds,
	// so that nothing else on the host can free it meanwhile).
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	explicit := r.startWorker("explicit-addr", "--admin-addr", taken.Addr().String())
	select {
	case <-explicit.exited:
		explicit.mu.Lock()
		explicit.expected = true
		explicit.mu.Unlock()
		require.Error(t, explicit.err, "a taken --admin-addr given explicitly is fatal")
	case <-time.After(faultDeadline):
		t.Fatalf("a replica given a taken --admin-addr kept running\n%s", r.logs())
	}
	require.Contains(t, explicit.out.String(), "--admin-addr")
	r.stopWorkers()
}

// cliPublish runs `publish --json` of one record to subj in this process.
func cliPublish(t *testing.T, natsURL, subj, record string) (publishOutput, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"publish", "--json", "--nats-url", natsURL, "--subject", subj, "-"}, strings.NewReader(record), &out, &errOut)
	var res publishOutput
	if err == nil {
		require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	}
	return res, err
}

func TestASIGHUPOnOneReplicaKeepsTheSubjectsAnotherReplicaStillRuns(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	require.NoError(t, os.WriteFile(r.config, []byte("workflows:"+reloadAlpha+reloadBeta), 0o600))
	admin1 := freeAddr(t)
	p1 := r.startWorker("narrow-1", "--admin-addr", admin1)
	r.waitWorkflows(js, "narrow-1", "alpha", "beta")
	r.startWorker("narrow-2")
	r.waitWorkflows(js, "narrow-2", "alpha", "beta")

	// One replica is reloaded without alpha; the other still runs it.
	r.hangUp(p1, admin1, "workflows:"+reloadBeta, "applied")
	r.waitWorkflows(js, "narrow-1", "beta")
	st, err := js.Stream(context.Background(), leads.StreamDefault)
	require.NoError(t, err)
	require.Contains(t, st.CachedInfo().Config.Subjects, "leads.alpha.>", "the stream keeps what a live replica runs")

	res, err := cliPublish(t, srv.ClientURL(), "leads.alpha.web", `{"id":"a1","name":"Lead a1"}`)
	require.NoError(t, err, "the event is stored\n%s", r.logs())
	require.Equal(t, 1, res.Published)
	require.Empty(t, res.Warning, "a workflow runs on the subject")
	r.ids = append(r.ids, "a1")
	require.Eventually(t, func() bool {
		r.requireWorkersAlive()
		return r.sb.Sandbox.CountByExternalID()["a1"] == 1
	}, faultDeadline, faultPoll, "the replica still running alpha never created it\n%s", r.logs())
	r.publishLead(js, "leads.beta.web", "b1")
	r.stopWorkers()
	r.requireExactlyOnce(js)
}

func TestPublishToASubjectNoStreamCapturesNamesTheReplicaRunningItRatherThanAdviseStartingOne(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: replica.BucketDefault})
	require.NoError(t, err)
	hb, err := json.Marshal(replica.State{Replica: "r1", Workflows: []replica.WorkflowState{{Workflow: "imports", Subject: "imports.>", State: replica.StateRunning}}})
	require.NoError(t, err)
	_, err = kv.Put(ctx, "r1", hb)
	require.NoError(t, err)

	_, err = cliPublish(t, srv.ClientURL(), "imports.csv", `{"id":"i1","name":"Imported"}`)
	require.ErrorIs(t, err, ingest.ErrNoStream)
	require.ErrorContains(t, err, "replica r1 runs workflow imports on imports.>")
	require.NotContains(t, err.Error(), "start 'kustomer-sync run'")
}

func TestDLQReplayAfterARenameBySIGHUPKeepsTheEntryAndExits1(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	r := newFaultRun(t, srv.ClientURL())
	require.NoError(t, os.WriteFile(r.config, []byte("workflows:"+reloadAlpha), 0o600))
	admin1 := freeAddr(t)
	p := r.startWorker("rename-1", "--admin-addr", admin1)
	r.waitWorkflows(js, "rename-1", "alpha")
	_, err := js.Publish(context.Background(), "leads.alpha.web", []byte(`not json`))
	require.NoError(t, err)
	ctx := context.Background()
	var dead []dlq.Record
	require.Eventually(t, func() bool {
		r.requireWorkersAlive()
		store, err := dlq.OpenStore(ctx, js, dlq.StreamDefault)
		if err != nil {
			return false
		}
		dead, err = store.List(ctx, dlq.Filter{All: true})
		return err == nil && len(dead) == 1
	}, faultDeadline, faultPoll, "the malformed event was never dead-lettered\n%s", r.logs())
	require.Equal(t, "alpha", dead[0].Workflow)

	// alpha renamed by SIGHUP: its consumer is kept, nobody runs it.
	r.hangUp(p, admin1, "workflows:"+strings.Replace(reloadAlpha, "name: alpha", "name: renamed", 1), "applied")
	r.waitWorkflows(js, "rename-1", "renamed")

	var out, errOut bytes.Buffer
	err = run(ctx, []string{"dlq", "replay", "--all", "--nats-url", srv.ClientURL()}, strings.NewReader(""), &out, &errOut)
	require.Error(t, err, "exit 1\n%s", out.String())
	require.Contains(t, out.String(), "Kept entry")
	require.Contains(t, out.String(), `workflow "alpha" no longer reads leads.alpha.web`)
	require.NotContains(t, out.String(), "Replayed 1 entry")
	store, err := dlq.OpenStore(ctx, js, dlq.StreamDefault)
	require.NoError(t, err)
	kept, err := store.List(ctx, dlq.Filter{All: true})
	require.NoError(t, err)
	require.Len(t, kept, 1, "the entry is kept")
	r.stopWorkers()
}
