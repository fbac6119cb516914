package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// cli runs the binary's run function in-process and returns stdout, stderr.
func cli(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDemoLeadsAreTheTestdataLeads(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile("../../testdata/leads.jsonl")
	require.NoError(t, err)
	require.Equal(t, string(want), string(demoLeads), "cmd/kustomer-sync/demo_leads.jsonl must be a copy of testdata/leads.jsonl")
}

func TestDemoCreatesTheSampleCustomersAndPrintsASummary(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, "", "demo", "--log-level", "warn", "--log-format", "json")
	require.NoError(t, err)
	require.Contains(t, out, "events processed   24 of 24")
	require.Contains(t, out, "customers created  23")
	require.Contains(t, out, "items failed       1")
	require.Contains(t, out, `"ivan.petrov(at)example" is not an email address`)
}

func TestRunRefusesToStartWithoutAnAPIKeyAndSaysHowToFixIt(t *testing.T) {
	t.Setenv("KUSTOMER_API_KEY", "")
	_, _, err := cli(t, "", "run", "--nats-url", "nats://127.0.0.1:1")
	require.Error(t, err)
	require.Contains(t, err.Error(), "KUSTOMER_API_KEY")
	require.Contains(t, err.Error(), "--sandbox")
	require.Equal(t, 2, exitCode(err))
}

func TestUnknownFlagIsAUsageError(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "run", "--no-such-flag")
	require.Error(t, err)
	require.Equal(t, 2, exitCode(err))
}

func TestPublishTwiceStoresEachEventOnce(t *testing.T) {
	t.Parallel()
	srv, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})

	input := "{\"id\":\"a\",\"name\":\"Jane\"}\n{\"name\":\"No Id\"}\n"
	out, _, err := cli(t, input, "publish", "--nats-url", srv.ClientURL())
	require.NoError(t, err)
	require.Contains(t, out, "published 2 events")
	out, _, err = cli(t, input, "publish", "--nats-url", srv.ClientURL())
	require.NoError(t, err)
	require.Contains(t, out, "published 0 events")
	require.Contains(t, out, "2 already published")

	st, err := js.Stream(context.Background(), "LEADS")
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs)
}

func TestNATSPasswordsAreRedactedFromURLsInMessages(t *testing.T) {
	t.Parallel()
	require.Equal(t, "nats://[redacted]@nats-1:4222,nats://nats-2:4222", redactURL("nats://user:s3cret@nats-1:4222,nats://nats-2:4222"))
	require.Equal(t, "nats://[redacted]@h:4222", redactURL("nats://tok3n@h:4222"))
	_, _, err := cli(t, `{"name":"Jane"}`, "publish", "--nats-url", "nats://user:s3cret@127.0.0.1:1")
	require.ErrorContains(t, err, "connect to NATS at nats://[redacted]@127.0.0.1:1")
	require.NotContains(t, err.Error(), "s3cret")
}

func TestPublishWithoutAStreamSaysHowToCreateOne(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, _, err := cli(t, `{"name":"Jane"}`, "publish", "--nats-url", srv.ClientURL())
	require.ErrorContains(t, err, "no stream captures that subject")
	require.ErrorContains(t, err, "kustomer-sync run")
}

// bench --profile profiles the bench process: with --process the replicas
// are elsewhere, and a profile without them would mislead.
func TestBenchProfileOfJobModelRunsRefusesReplicasRunAsProcesses(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "bench", "--mode", "bulk", "--job-model", "parallel", "--process", "--profile", t.TempDir())
	require.ErrorContains(t, err, "--profile profiles this process: leave --process out")
	var ue usageError
	require.ErrorAs(t, err, &ue)
}
