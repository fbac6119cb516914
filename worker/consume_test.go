package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func mustWorkflows(t *testing.T, config string) []*mapping.Workflow {
	t.Helper()
	cfg, err := mapping.Parse("test.yaml", []byte(config))
	require.NoError(t, err)
	return cfg.Workflows
}

// sampleConfig is testdata/workflows.yaml, the README's fuller example that
// docker-compose.yml runs: "default" on leads.>, "batch" on batches.>.
func sampleConfig(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "workflows.yaml"))
	require.NoError(t, err)
	return string(data)
}

func (h *harness) streamConfig(name string) jetstream.StreamConfig {
	h.t.Helper()
	st, err := h.js.Stream(context.Background(), name)
	require.NoError(h.t, err)
	return st.CachedInfo().Config
}

func (h *harness) runsOf(workflow string) []runlog.Record {
	h.t.Helper()
	recs, err := h.runs.List(context.Background(), runlog.Filter{Workflow: workflow})
	require.NoError(h.t, err)
	return recs
}

func TestTheManagedStreamCapturesEveryWorkflowsSubjectAndFollowsTheConfig(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: sampleConfig(t)})
	require.Equal(t, []string{"leads.>", "batches.>"}, h.streamConfig(leads.StreamDefault).Subjects)

	seq := h.publish("batches.expo", "expo-1", `{"source":"expo","leads":[{"id":"x-1","first_name":"Ann","email":"ann@example.com"}]}`)
	rec := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, rec.Status)
	require.Equal(t, "batch", rec.Workflow)

	// The config changes: the stream's subjects follow it.
	h.stopWorker()
	h.start(testWorkflow("vip-web-orders"))
	require.Equal(t, []string{"leads.vip", "leads.web.*", "orders.>"}, h.streamConfig(leads.StreamDefault).Subjects)
	seq = h.publish("orders.shop", "o-1", `{"name":"Otto"}`)
	require.Equal(t, runlog.Succeeded, h.waitRun(seq).Status)
}

func TestAWorkflowSubjectAnotherStreamCapturesIsRefusedNamingThatStream(t *testing.T) {
	t.Parallel()
	srv, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "EXPO", Subjects: []string{"batches.expo.>"}})
	ctx := context.Background()

	w, err := newTestWorker(t, js, srv, sampleConfig(t))
	require.NoError(t, err)
	err = w.Start(ctx)
	require.ErrorContains(t, err, `leads: create stream LEADS: subject: stream LEADS cannot capture subject batches.> of workflow "batch": stream EXPO already captures batches.expo.>, and NATS stores a subject in one stream only. Give the workflow a subject outside batches.expo.>, or remove it from stream EXPO`)
	require.NotContains(t, err.Error(), "err_code", "the server's words are replaced, not appended")
	var apiErr *jetstream.APIError
	require.ErrorAs(t, err, &apiErr, "the server's error is still there for errors.As")

	plan, err := leads.CheckStream(ctx, js, leads.StreamConfig{}, mustWorkflows(t, sampleConfig(t)))
	require.ErrorContains(t, err, `stream EXPO already captures batches.expo.>`)
	require.False(t, plan.Exists)
}

func TestCheckStreamRefusesEveryWorkflowAnOperatorsStreamDoesNotCapture(t *testing.T) {
	t.Parallel()
	_, js, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.web"}})
	ctx := context.Background()
	plan, err := leads.CheckStream(ctx, js, leads.StreamConfig{}, mustWorkflows(t, sampleConfig(t)))
	require.EqualError(t, err, `leads: stream LEADS (created by an operator, not by kustomer-sync) captures leads.web, not subject leads.> of workflow "default", nor subject batches.> of workflow "batch": events published there are stored nowhere. Add the subject to the stream (nats stream edit LEADS --subjects "leads.>,batches.>"), or give the workflow a subject the stream captures`)
	require.Equal(t, leads.StreamPlan{Name: "LEADS", Exists: true, Subjects: []string{"leads.web"}}, plan)
}

func TestOverlappingWorkflowsEachRunTheEventUnderTheirOwnRunID(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("all-and-vip")})
	h.publish("leads.vip", "v-1", `{"name":"Vera"}`)
	recs := h.waitRuns(2)
	ids := map[string]string{}
	for _, r := range recs {
		ids[r.Workflow] = r.ID
		require.Equal(t, runlog.Succeeded, r.Status)
	}
	require.Equal(t, map[string]string{"all": "LEADS-1-1-all", "vip": "LEADS-1-1-vip"}, ids)
	for _, id := range ids {
		got, err := h.runs.Get(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, id, got.ID)
	}
	// Fan-out: each workflow created its own customer.
	require.Len(t, h.sb.Sandbox.Customers(), 2)
}

func TestANewWorkflowStartsWithNewEventsAndAnExistingConsumerKeepsItsPlace(t *testing.T) {
	t.Parallel()
	const named = `
workflows:
  - name: %s
    subject: "leads.>"
    start: %s
    inputs: {externalId: "{{trigger.id}}", name: "{{trigger.name}}"}
`
	h := setup(t, harnessOptions{config: fmt.Sprintf(named, "signup", "new")})
	for i := range 3 {
		h.publish("leads.web", fmt.Sprintf("lead-%d", i), fmt.Sprintf(`{"id":"ext-%d","name":"Lead %d"}`, i, i))
	}
	h.waitRuns(3)
	h.waitIdle("signup")

	// The same workflow restarted with start: all keeps its position.
	h.stopWorker()
	h.start(fmt.Sprintf(named, "signup", "all"))
	c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"signup")
	require.NoError(t, err)
	info := c.CachedInfo()
	require.Equal(t, uint64(3), info.Delivered.Stream)
	require.Zero(t, info.NumPending)
	// Renamed: a new consumer, which starts after the three events.
	h.stopWorker()
	h.start(fmt.Sprintf(named, "onboarding", "new"))
	seq := h.publish("leads.web", "lead-3", `{"id":"ext-3","name":"Lead 3"}`)
	require.Equal(t, "onboarding", h.waitRun(seq).Workflow)
	h.waitIdle("onboarding")

	require.Len(t, h.runsOf("signup"), 3, "no event ran twice under the old name")
	// The old name's consumer holds the event it never got: validate and run say so.
	plan, err := leads.CheckStream(context.Background(), h.js, leads.StreamConfig{}, mustWorkflows(t, fmt.Sprintf(named, "onboarding", "new")))
	require.NoError(t, err)
	require.Equal(t, []leads.Abandoned{{Consumer: "ksync-signup", Workflow: "signup", Pending: 1}}, plan.Abandoned)
	require.Len(t, h.runsOf("onboarding"), 1, "the renamed workflow ran only the new event")
	h.requireEachCreatedOnce([]string{"ext-0", "ext-1", "ext-2", "ext-3"})
}

func TestARenamedWorkflowStartingAtAllFindsItsItemsInTheLedger(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: loopConfig})
	ids := h.publishLoopEvents("renamed", 1, 3)
	h.waitRuns(1)

	h.stopWorker()
	// Renamed with another subject (not a rename that continues its old
	// consumer), starting at every event the stream holds.
	renamed := strings.Replace(strings.Replace(loopConfig, "name: batch", "name: leads", 1), `subject: "leads.>"`, `subject: "leads.*"`, 1)
	h.start(strings.Replace(renamed, "loop:", "start: all\n    loop:", 1))
	h.waitIdle("leads")
	recs := h.runsOf("leads")
	require.Len(t, recs, 1)
	require.Equal(t, runlog.Succeeded, recs[0].Status)
	for _, it := range recs[0].Items {
		require.Equal(t, outcome.AlreadyCreated, it.Outcome, "item %d", it.Index)
	}
	h.requireEachCreatedOnce(ids)
}

func TestStartAtATimeSkipsEarlierEvents(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: testWorkflow("first")})
	h.publish("leads.b", "b-1", `{"name":"Before"}`)
	st, err := h.js.Stream(context.Background(), leads.StreamDefault)
	require.NoError(t, err)
	m, err := st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	after := m.Time.Add(time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(after) }, time.Second, time.Millisecond)
	seq := h.publish("leads.b", "b-2", `{"name":"After"}`)

	h.stopWorker()
	h.start(fmt.Sprintf(`
workflows:
  - {name: first, subject: "leads.>", inputs: {name: "{{trigger.name}}"}}
  - {name: second, subject: "leads.b", start: %q, inputs: {name: "{{trigger.name}}"}}
`, after.Format(time.RFC3339Nano)))
	h.waitIdle("second")
	recs := h.runsOf("second")
	require.Len(t, recs, 1)
	require.Equal(t, seq, recs[0].StreamSeq)
}

func TestTheManagedStreamKeepsEventsForTheConfiguredAgeAndSize(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	cfg := h.streamConfig(leads.StreamDefault)
	require.Equal(t, leads.StreamMaxAgeDefault, cfg.MaxAge)
	require.Equal(t, int64(-1), cfg.MaxBytes)

	h.stopWorker()
	h.opts.worker = func(c *Config) { c.Stream.MaxAge, c.Stream.MaxBytes = time.Hour, 1<<20 }
	h.start("")
	cfg = h.streamConfig(leads.StreamDefault)
	require.Equal(t, time.Hour, cfg.MaxAge)
	require.Equal(t, int64(1<<20), cfg.MaxBytes)
	require.Equal(t, jetstream.DiscardNew, cfg.Discard, "a full stream refuses new events rather than drop unprocessed ones")
}

func TestABacklogBeforeTheFirstStartIsProcessedARenamedWorkflowContinuesAndSkippingIsCounted(t *testing.T) {
	t.Parallel()
	const named = `
workflows:
  - name: %s
    subject: "leads.>"
    inputs: {externalId: "{{trigger.id}}", name: "{{trigger.name}}"}
`
	var backlog []string
	h := setup(t, harnessOptions{config: fmt.Sprintf(named, "signup"), before: func(h *harness) {
		// A backfill published before the first worker is deployed.
		_, err := h.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: leads.StreamDefault, Subjects: []string{"leads.>"}})
		require.NoError(t, err)
		for i := range 3 {
			h.publish("leads.web", fmt.Sprintf("lead-%d", i), fmt.Sprintf(`{"id":"ext-%d","name":"Lead %d"}`, i, i))
			backlog = append(backlog, fmt.Sprintf("ext-%d", i))
		}
	}})
	h.waitIdle("signup")
	require.Len(t, h.runsOf("signup"), 3, "the backlog is processed by default")

	// Renamed while events wait: the new name continues where the old one
	// stopped.
	h.stopWorker()
	for i := 3; i < 5; i++ {
		h.publish("leads.web", fmt.Sprintf("lead-%d", i), fmt.Sprintf(`{"id":"ext-%d","name":"Lead %d"}`, i, i))
		backlog = append(backlog, fmt.Sprintf("ext-%d", i))
	}
	h.start(fmt.Sprintf(named, "onboarding") + `
  - name: late
    subject: "leads.web"
    start: new
    inputs: {externalId: "late-{{trigger.id}}", name: "{{trigger.name}}"}
`)
	h.waitIdle("onboarding")
	require.Len(t, h.runsOf("onboarding"), 2, "the renamed workflow ran the two events its old name had not, and no other")
	require.Len(t, h.runsOf("signup"), 3)
	c, err := h.js.Consumer(context.Background(), leads.StreamDefault, leads.ConsumerPrefixDefault+"onboarding")
	require.NoError(t, err)
	require.EqualValues(t, 2, c.CachedInfo().Delivered.Consumer, "nothing delivered twice")
	plan, err := leads.CheckStream(context.Background(), h.js, leads.StreamConfig{}, h.worker.cfg.Workflows)
	require.NoError(t, err)
	require.Empty(t, plan.Abandoned, "the old consumer is continued, not abandoned")
	h.requireEachCreatedOnce(backlog)

	// Skipping was asked for: status counts what it skipped.
	st, err := leads.CollectStatus(context.Background(), h.js, leads.StatusConfig{})
	require.NoError(t, err)
	skipped := map[string]uint64{}
	for _, ws := range st.Workflows {
		skipped[ws.Workflow] = ws.Skipped
	}
	require.Equal(t, map[string]uint64{"signup": 0, "onboarding": 0, "late": 5}, skipped)
	require.Empty(t, h.runsOf("late"))
}
