package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// writeTemp writes content to a file called name in a new temporary folder
// and answers its path.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	return writeTemp(t, "workflows.yaml", yaml)
}

func TestValidateSaysWhichWorkflowsOverlap(t *testing.T) {
	t.Parallel()
	path := mappingtest.Path("overlapping")
	out, _, err := cli(t, "", "validate", path)
	require.NoError(t, err, "an overlap is a notice, not an error")
	require.Contains(t, out, `notice: workflows "all" (leads.>) and "vip" (leads.vip) overlap: an event on a subject both match runs in both (fan-out); each creates its own customer for it`)
	require.Equal(t, 1, strings.Count(out, "notice:"))
	out, _, err = cli(t, "", "validate", "--json", path)
	require.NoError(t, err)
	var report validateJSON
	require.NoError(t, json.Unmarshal([]byte(out), &report))
	require.Len(t, report.Notices, 1)

	out, _, err = cli(t, "", "validate", filepath.Join("..", "..", "testdata", "workflows.yaml"))
	require.NoError(t, err)
	require.NotContains(t, out, "notice:")
}

func TestValidateWithANATSURLRefusesWorkflowsTheOperatorsStreamDoesNotCapture(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	sample := filepath.Join("..", "..", "testdata", "workflows.yaml")

	out, _, err := cli(t, "", "validate", "--nats-url", srv.ClientURL(), sample)
	require.NoError(t, err)
	require.Contains(t, out, "stream LEADS: not there yet; 'run' creates it on leads.>, batches.>")
	out, _, err = cli(t, "", "validate", "--json", "--nats-url", srv.ClientURL(), sample)
	require.NoError(t, err)
	var report validateJSON
	require.NoError(t, json.Unmarshal([]byte(out), &report))
	require.Equal(t, &leads.StreamPlan{Name: "LEADS", Managed: true, Subjects: []string{"leads.>", "batches.>"}}, report.Stream)

	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	require.NoError(t, err)
	out, _, err = cli(t, "", "validate", "--json", "--nats-url", srv.ClientURL(), sample)
	require.Error(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &report))
	require.False(t, report.Valid)
	require.Contains(t, report.Errors[0].Message, `not subject batches.> of workflow "batch"`)
	_, _, err = cli(t, "", "validate", "--nats-url", srv.ClientURL(), sample)
	require.EqualError(t, err, `leads: stream LEADS (created by an operator, not by kustomer-sync) captures leads.>, not subject batches.> of workflow "batch": events published there are stored nowhere. Add the subject to the stream (nats stream edit LEADS --subjects "leads.>,batches.>"), or give the workflow a subject the stream captures`)
	require.Equal(t, 1, exitCode(err))

	out, _, err = cli(t, "", "validate", "--nats-url", srv.ClientURL(), "--stream", "LEADS", writeConfig(t, "workflows:\n  - {name: web, subject: leads.web}\n"))
	require.NoError(t, err)
	require.Contains(t, out, "stream LEADS: created by an operator; it captures leads.>, which covers every workflow's subject")
}

func TestPublishWarnsWhenNoWorkflowConsumesTheSubjectButStillPublishes(t *testing.T) {
	t.Parallel()
	srv, _, st := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	ctx := context.Background()

	out, errOut, err := cli(t, `{"id":"a","name":"Ann"}`, "publish", "--nats-url", srv.ClientURL(), "--subject", "leads.web")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event")
	require.Contains(t, errOut, "warning: no worker consumes stream LEADS yet: these events wait there.")

	// A workflow on leads.web exists now (as `run` creates it).
	_, err = st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "ksync-web", FilterSubject: "leads.web",
		Metadata: map[string]string{"managed-by": "kustomer-sync", "workflow": "web"}})
	require.NoError(t, err)
	out, errOut, err = cli(t, `{"id":"b","name":"Bob"}`, "publish", "--nats-url", srv.ClientURL(), "--subject", "leads.shop", "--json")
	require.NoError(t, err)
	var res publishOutput
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Equal(t, 1, res.Published)
	require.Equal(t, "no workflow consumes leads.shop (stream LEADS has web on leads.web): these events wait unprocessed. A workflow added for this subject processes them, unless it sets start: new or a start time after now", res.Warning)
	require.Contains(t, errOut, "warning: "+res.Warning)

	out, errOut, err = cli(t, `{"id":"c","name":"Cy"}`, "publish", "--nats-url", srv.ClientURL(), "--subject", "leads.web", "--json")
	require.NoError(t, err)
	require.NotContains(t, out, "warning")
	require.Empty(t, errOut)
}

func TestRunAppliesStreamRetentionFromFlagsAndEnvironment(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	t.Setenv("KSYNC_STREAM_MAX_BYTES", "10GB")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--sandbox", "--nats-url", srv.ClientURL(), "--stream-max-age", "48h", "--log-level", "error"},
			strings.NewReader(""), &strings.Builder{}, &lockedBuffer{})
	}()
	var cfg jetstream.StreamConfig
	require.Eventually(t, func() bool {
		st, err := js.Stream(context.Background(), "LEADS")
		if err != nil {
			return false
		}
		cfg = st.CachedInfo().Config
		return st.CachedInfo().State.Consumers > 0 // the worker is set up
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 48*time.Hour, cfg.MaxAge)
	require.Equal(t, int64(10_000_000_000), cfg.MaxBytes)
	require.Equal(t, jetstream.DiscardNew, cfg.Discard)
	cancel()
	require.NoError(t, <-done)

	t.Setenv("KSYNC_STREAM_MAX_BYTES", "10 gigs")
	_, _, err := cli(t, "", "run", "--sandbox", "--nats-url", "nats://127.0.0.1:1")
	require.ErrorContains(t, err, `KSYNC_STREAM_MAX_BYTES="10 gigs" (--stream-max-bytes): want a size in bytes, with an optional unit: 10GB, 512MiB, or 0`)
	require.Equal(t, 2, exitCode(err))
}
