package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/loop/looptest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// The test leads' personal data, which no span may hold.
const (
	traceLeadName  = "Annabel Tracewell"
	traceLeadEmail = "annabel.tracewell@example.org"
	traceLeadPhone = "+14155550123"
)

// traceLead is an event of one lead with personal data.
var traceLead = fmt.Sprintf(`{"id":"tr-1","name":%q,"emails":[%q],"phones":[%q]}`, traceLeadName, traceLeadEmail, traceLeadPhone)

// traceMatchConfig looks customers up by email and phone before creating
// them: the look-ups' paths hold them.
var traceMatchConfig = testWorkflow("match-email-phone-retry")

// spans is what a test's in-memory exporter holds.
type spans struct {
	t   *testing.T
	exp *tracetest.InMemoryExporter
	tp  *sdktrace.TracerProvider
}

// tracedWorker returns an in-memory exporter and a harness option that
// makes the worker trace every event into it.
func tracedWorker(t *testing.T, adjust func(*Config)) (*spans, func(*Config)) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &spans{t: t, exp: exp, tp: tp}, func(c *Config) {
		c.TracerProvider = tp
		if adjust != nil {
			adjust(c)
		}
	}
}

func (s *spans) all() tracetest.SpanStubs { return s.exp.GetSpans() }

// named returns the spans called name.
func (s *spans) named(name string) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, sp := range s.all() {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

// children returns the spans whose parent is p, by name.
func (s *spans) children(p tracetest.SpanStub) map[string]tracetest.SpanStubs {
	out := map[string]tracetest.SpanStubs{}
	for _, sp := range s.all() {
		if sp.Parent.SpanID() == p.SpanContext.SpanID() && sp.Parent.TraceID() == p.SpanContext.TraceID() {
			out[sp.Name] = append(out[sp.Name], sp)
		}
	}
	return out
}

// eventSpan waits for the span of the event whose run is runID, ended.
func (s *spans) eventSpan(runID string) tracetest.SpanStub {
	s.t.Helper()
	var found tracetest.SpanStub
	require.Eventually(s.t, func() bool {
		for _, sp := range s.all() {
			if attr(sp, tracing.AttrRunID) == runID {
				found = sp
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "no span for run %s", runID)
	return found
}

func attr(sp tracetest.SpanStub, key attribute.Key) string {
	for _, a := range sp.Attributes {
		if a.Key == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// requireNoPII checks every name and attribute (of spans, events and
// links) of every span for the test lead's email, phone and name.
func (s *spans) requireNoPII() {
	s.t.Helper()
	all := s.all()
	require.NotEmpty(s.t, all)
	check := func(where string, kvs []attribute.KeyValue) {
		for _, kv := range kvs {
			v := strings.ToLower(kv.Value.Emit())
			for _, pii := range []string{traceLeadEmail, traceLeadPhone, "4155550123", traceLeadName, "tracewell", "annabel"} {
				require.NotContains(s.t, v, strings.ToLower(pii), "%s attribute %s", where, kv.Key)
			}
		}
	}
	for _, sp := range all {
		require.NotContains(s.t, strings.ToLower(sp.Name), "tracewell")
		check(sp.Name, sp.Attributes)
		for _, ev := range sp.Events {
			check(sp.Name+" event "+ev.Name, ev.Attributes)
		}
		for _, l := range sp.Links {
			check(sp.Name+" link", l.Attributes)
		}
		check(sp.Name+" resource", sp.Resource.Attributes())
	}
}

// publishTraced publishes body with traceparent set to a span of the
// test's own, and returns that span's context.
func (h *harness) publishTraced(subject, msgID, body string, s *spans) (uint64, trace.SpanContext) {
	h.t.Helper()
	ctx, span := s.tp.Tracer("test").Start(context.Background(), "test publisher")
	defer span.End()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	m.Header.Set(nats.MsgIdHdr, msgID)
	tracing.Inject(ctx, m.Header)
	require.NotEmpty(h.t, m.Header.Get("traceparent"))
	ack, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(h.t, err)
	return ack.Sequence, span.SpanContext()
}

// logMessages are the messages of the worker's JSON log lines, in order.
func (h *harness) logMessages() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct{ Message string }
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m.Message)
		}
	}
	return out
}

// logLines are the worker's JSON log lines that have msg.
func (h *harness) logLines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(h.logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func TestTraceOfACreatedEventContinuesThePublishersTraceWithoutPersonalData(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	h := setup(t, harnessOptions{config: traceMatchConfig, worker: traced})
	seq, pub := h.publishTraced("leads.web", "tr-1", traceLead, s)
	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)

	ev := s.eventSpan(run.ID)
	require.Equal(t, pub.TraceID(), ev.SpanContext.TraceID(), "the publisher's trace goes on")
	require.Equal(t, pub.SpanID(), ev.Parent.SpanID(), "a child of the publisher's span")
	require.Equal(t, trace.SpanKindConsumer, ev.SpanKind)
	require.Equal(t, "default", attr(ev, tracing.AttrWorkflow))
	require.Equal(t, "leads.web", attr(ev, tracing.AttrDestination))
	require.Equal(t, fmt.Sprint(seq), attr(ev, tracing.AttrStreamSeq))
	require.Equal(t, "1", attr(ev, tracing.AttrDelivery))
	require.Equal(t, string(runlog.Succeeded), attr(ev, tracing.AttrStatus))
	require.Equal(t, ev.SpanContext.TraceID().String(), run.TraceID, "the run record names the trace")

	kids := s.children(ev)
	require.Len(t, kids[tracing.SpanItem], 1)
	require.Len(t, kids[spanAck], 1)
	require.NotEmpty(t, kids["ksync.budget.wait"])
	item := kids[tracing.SpanItem][0]
	require.Equal(t, "1", attr(item, tracing.AttrAttempt))
	require.Equal(t, "created", attr(item, tracing.AttrOutcome))
	require.Equal(t, run.Items[0].CustomerID, attr(item, tracing.AttrCustomerID))
	require.Equal(t, "email,phone", attr(item, tracing.AttrMatchKinds), "match keys by kind")
	itemKids := s.children(item)
	require.Len(t, itemKids["ksync.ledger.claim"], 1)
	require.Len(t, itemKids["ksync.ledger.record"], 1)
	require.Len(t, itemKids["GET /v1/customers/email={value}"], 1, "the look-up by email, its value left out")
	require.Len(t, itemKids["GET /v1/customers/phone={value}"], 1)
	post := itemKids["POST /v1/customers"]
	require.Len(t, post, 1)
	require.Equal(t, trace.SpanKindClient, post[0].SpanKind)
	require.Equal(t, "201", attr(post[0], "http.response.status_code"))
	require.Equal(t, "POST", attr(post[0], "http.request.method"))
	require.Equal(t, h.sb.URL+"/v1/customers", attr(post[0], "url.full"))

	// The result carries the trace on.
	st, err := h.js.Stream(context.Background(), result.StreamDefault)
	require.NoError(t, err)
	res, err := st.GetLastMsgForSubject(context.Background(), result.SubjectsDefault)
	require.NoError(t, err)
	require.Equal(t, run.TraceID, res.Header.Get(result.HeaderTraceID))
	require.True(t, strings.HasPrefix(res.Header.Get("traceparent"), "00-"+run.TraceID+"-"+ev.SpanContext.SpanID().String()))

	// The event's log lines name the trace and the span.
	done := h.logLines("event done")
	require.Len(t, done, 1)
	require.Equal(t, run.TraceID, done[0]["trace_id"])
	require.Equal(t, ev.SpanContext.SpanID().String(), done[0]["span_id"])
	s.requireNoPII()
}

func TestTraceOfARetriedThenCreatedItemHasOneSpanPerAttempt(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	k := &kustomerFailsFirst{}
	h := setup(t, harnessOptions{config: leadConfig("retry: {max_attempts: 3, initial_delay: 10ms, max_delay: 20ms, jitter: 0}"),
		worker: traced, wrap: func(c Kustomer) Kustomer { k.Kustomer = c; return k }})
	seq := h.publish("leads.web", "tr-2", `{"id":"tr-2","name":"Bo"}`)
	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.Equal(t, 2, run.Items[0].Attempts)

	ev := s.eventSpan(run.ID)
	require.False(t, ev.Parent.IsValid(), "no publisher trace: the event's span is a root")
	items := s.children(ev)[tracing.SpanItem]
	require.Len(t, items, 2)
	byAttempt := map[string]tracetest.SpanStub{}
	for _, it := range items {
		byAttempt[attr(it, tracing.AttrAttempt)] = it
	}
	require.Equal(t, "retry", attr(byAttempt["1"], tracing.AttrOutcome))
	require.Equal(t, codes.Error, byAttempt["1"].Status.Code)
	require.Equal(t, "created", attr(byAttempt["2"], tracing.AttrOutcome))
	require.Equal(t, run.Items[0].CustomerID, attr(byAttempt["2"], tracing.AttrCustomerID))
	require.Len(t, s.children(byAttempt["2"])["POST /v1/customers"], 1)
}

// kustomerFailsFirst answers the first create with a 503.
type kustomerFailsFirst struct {
	Kustomer
	calls atomic.Int32
}

func (k *kustomerFailsFirst) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	if k.calls.Add(1) == 1 {
		return nil, unavailable("create")
	}
	return k.Kustomer.CreateCustomer(ctx, body)
}

func TestTraceOfADeadLetteredEventThenItsReplayLinksTheTwo(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	h := setup(t, harnessOptions{config: signupConfig, worker: traced})
	seq := h.publish("leads.x", "tr-3", fmt.Sprintf(`{"name":%q,"email":"annabel.tracewell(at)example.org"}`, traceLeadName))
	orig := h.waitRun(seq)
	require.Equal(t, runlog.Failed, orig.Status)
	ev := s.eventSpan(orig.ID)
	kids := s.children(ev)
	require.Len(t, kids["ksync.dead_letter"], 1)
	require.Equal(t, outcome.Validation.String(), attr(kids["ksync.dead_letter"][0], tracing.AttrDLQClass))
	require.Empty(t, kids[tracing.SpanItem], "its mapping failed: no attempt was made")
	require.Len(t, kids[spanAck], 1)
	require.Equal(t, string(runlog.Failed), attr(ev, tracing.AttrStatus))
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	require.Equal(t, ev.SpanContext.TraceID().String(), dead[0].TraceID, "the dead letter names the trace")
	require.Equal(t, ev.SpanContext.SpanID().String(), dead[0].SpanID)
	require.Equal(t, dead[0].TraceID, orig.TraceID)

	h.stopWorker()
	h.start(fixedSignupConfig)
	require.Equal(t, 1, h.replayAll().Replayed)
	runs := h.waitRuns(2)
	replay := runs[0]
	require.Equal(t, runlog.Succeeded, replay.Status)
	rev := s.eventSpan(replay.ID)
	require.NotEqual(t, ev.SpanContext.TraceID(), rev.SpanContext.TraceID(), "a replay is a trace of its own")
	require.Equal(t, fmt.Sprint(dead[0].ID), attr(rev, tracing.AttrReplayOf))
	require.Len(t, rev.Links, 1, "linked to the event it replays")
	require.Equal(t, ev.SpanContext.TraceID(), rev.Links[0].SpanContext.TraceID())
	require.Equal(t, ev.SpanContext.SpanID(), rev.Links[0].SpanContext.SpanID())
	require.Equal(t, "created", attr(s.children(rev)[tracing.SpanItem][0], tracing.AttrOutcome))
	s.requireNoPII()
}

func TestTraceOfAnEventDeadLetteredAfterItsAttemptsShowsEachAttempt(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, func(c *Config) { c.BreakerThreshold = 1000 }) // dead-letter, do not pause
	h := setup(t, harnessOptions{
		config:  leadConfig("retry: {max_attempts: 2, initial_delay: 10ms, max_delay: 20ms, jitter: 0}"),
		sandbox: sandbox.Config{ErrorRate: 1},
		worker:  traced,
	})
	seq := h.publish("leads.web", "tr-x", fmt.Sprintf(`{"id":"tr-x","name":%q}`, traceLeadName))
	run := h.waitRun(seq)
	require.Equal(t, runlog.Failed, run.Status)
	ev := s.eventSpan(run.ID)
	kids := s.children(ev)
	items := kids[tracing.SpanItem]
	require.Len(t, items, 2)
	for _, it := range items {
		require.Equal(t, "retry", attr(it, tracing.AttrOutcome))
		require.Equal(t, codes.Error, it.Status.Code)
		post := s.children(it)["POST /v1/customers"]
		require.Len(t, post, 1)
		require.Equal(t, "503", attr(post[0], "http.response.status_code"))
	}
	require.Len(t, kids["ksync.dead_letter"], 1)
	require.Equal(t, outcome.Exhausted.String(), attr(kids["ksync.dead_letter"][0], tracing.AttrDLQClass))
	require.Len(t, kids[spanAck], 1)
	require.Equal(t, string(runlog.Failed), attr(ev, tracing.AttrStatus))
	dead := h.deadLetters()
	require.Len(t, dead, 1)
	require.Equal(t, run.TraceID, dead[0].TraceID)
	s.requireNoPII()
}

func TestTraceOfAPausedThenResumedEventSpansThePause(t *testing.T) {
	t.Parallel()
	clock := looptest.NewFakeClock(time.Time{})
	k := &kustomerCannotCreateYet{}
	k.refusals.Store(1)
	s, traced := tracedWorker(t, func(c *Config) { c.Clock = clock })
	h := setup(t, harnessOptions{
		config:  leadConfig(),
		sandbox: sandbox.Config{RatePerMinute: -1},
		wrap:    func(c Kustomer) Kustomer { k.Kustomer = c; return k },
		worker:  traced,
	})
	go clock.Drive(t.Context())
	seq := h.publish("leads.web", "tr-4", `{"id":"tr-4","name":"Cy"}`)
	run := h.waitRun(seq)
	require.Equal(t, runlog.Succeeded, run.Status)

	ev := s.eventSpan(run.ID)
	kids := s.children(ev)
	require.Len(t, kids[spanPaused], 1, "the hold while paused")
	items := kids[tracing.SpanItem]
	require.Len(t, items, 2, "the refused attempt, then the one after the resume")
	var outcomes []string
	for _, it := range items {
		outcomes = append(outcomes, attr(it, tracing.AttrOutcome))
	}
	require.ElementsMatch(t, []string{"pause", "created"}, outcomes)
	paused := kids[spanPaused][0]
	for _, it := range items {
		if attr(it, tracing.AttrOutcome) == "created" {
			require.False(t, it.StartTime.Before(paused.EndTime), "created after the resume")
		}
	}
}

func TestTraceOfABulkBatchLinksItsRequestAndPollsToTheItems(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	h := setup(t, harnessOptions{config: strings.Replace(bulkLoopConfig, "linger: 20ms", "linger: 200ms", 1), worker: traced})
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, h.publish("leads.web", fmt.Sprintf("tr-b%d", i), leadsEvent(fmt.Sprintf("b%d", i))))
	}
	itemSpans := map[trace.SpanID]tracetest.SpanStub{}
	for _, seq := range seqs {
		run := h.waitRun(seq)
		require.Equal(t, runlog.Succeeded, run.Status)
		ev := s.eventSpan(run.ID)
		items := s.children(ev)[tracing.SpanItem]
		require.Len(t, items, 1)
		require.Equal(t, "created", attr(items[0], tracing.AttrOutcome))
		require.Equal(t, run.Items[0].BulkJob, attr(items[0], tracing.AttrBulkJob))
		itemSpans[items[0].SpanContext.SpanID()] = items[0]
	}
	reqs := s.named(spanBulkSend)
	require.NotEmpty(t, reqs)
	linked := 0
	for _, r := range reqs {
		require.False(t, r.Parent.IsValid(), "a bulk request's span is a root")
		require.NotEmpty(t, attr(r, tracing.AttrBulkJob))
		for _, l := range r.Links {
			require.Contains(t, itemSpans, l.SpanContext.SpanID())
			linked++
		}
		kids := s.children(r)
		require.Len(t, kids["POST /v1/customers/bulk"], 1)
		require.NotEmpty(t, kids[spanBulkPoll])
		for _, p := range kids[spanBulkPoll] {
			require.Equal(t, attr(r, tracing.AttrBulkJob), attr(p, tracing.AttrBulkJob))
			require.Len(t, p.Links, len(r.Links), "a poll links to the items its job carries")
			get := s.children(p)["GET /v1/bulk/{id}/batches"]
			require.Len(t, get, 1)
			require.Equal(t, attr(r, tracing.AttrBulkJob), attr(get[0], tracing.AttrBulkJob), "the HTTP span names the job")
		}
	}
	require.Equal(t, 3, linked, "each item is linked from the request that carried it")
}

func TestTraceContextCrossesNATSFromPublishAndFromIngest(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	h := setup(t, harnessOptions{config: leadConfig(), worker: traced})

	// publish: the caller's span, then the publish span, then the event's.
	ctx, cli := s.tp.Tracer("test").Start(context.Background(), "cli")
	res, err := ingest.Publisher{JS: h.js}.Publish(ctx, "leads.cli", []ingest.Event{{ID: "tr-p", Data: []byte(`{"id":"tr-p","name":"Di"}`), Line: 1}})
	cli.End()
	require.NoError(t, err)
	run := h.waitRun(res.Sequences[0])
	ev := s.eventSpan(run.ID)
	require.Equal(t, cli.SpanContext().TraceID(), ev.SpanContext.TraceID())
	pubs := s.named("publish leads.cli")
	require.Len(t, pubs, 1)
	require.Equal(t, trace.SpanKindProducer, pubs[0].SpanKind)
	require.Equal(t, cli.SpanContext().SpanID(), pubs[0].Parent.SpanID())
	require.Equal(t, pubs[0].SpanContext.SpanID(), ev.Parent.SpanID())

	// ingest: the request's own trace context, then the server span, the
	// publish span and the event's.
	hd, err := ingest.NewHandler(ingest.HandlerConfig{JS: h.js, TracerProvider: s.tp, Subjects: func(string) (string, bool) { return "leads.>", true }})
	require.NoError(t, err)
	srv := httptest.NewServer(hd)
	defer srv.Close()
	const incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/events/default", strings.NewReader(`{"id":"tr-i","name":"Ed"}`))
	require.NoError(t, err)
	req.Host = "localhost"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", incoming)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var acc ingest.Accepted
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&acc))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	run = h.waitRun(acc.Sequences[0])
	ev = s.eventSpan(run.ID)
	require.Equal(t, "0af7651916cd43dd8448eb211c80319c", ev.SpanContext.TraceID().String(), "the ingest request's trace goes on")
	pub := s.named("publish " + acc.Subject)
	require.Len(t, pub, 1)
	require.Equal(t, pub[0].SpanContext.SpanID(), ev.Parent.SpanID())
	var server tracetest.SpanStub
	for _, sp := range s.all() {
		if sp.SpanContext.SpanID() == pub[0].Parent.SpanID() {
			server = sp
		}
	}
	require.Equal(t, trace.SpanKindServer, server.SpanKind)
	require.Equal(t, "b7ad6b7169203331", server.Parent.SpanID().String())
}

func TestForgedOrOversizedTraceparentIsIgnored(t *testing.T) {
	t.Parallel()
	s, traced := tracedWorker(t, nil)
	h := setup(t, harnessOptions{config: leadConfig(), worker: traced})
	const forgedTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for i, hdr := range []nats.Header{
		{"traceparent": {"00-" + forgedTrace + "-00f067aa0ba902b7-01" + strings.Repeat("x", 10000)}},                  // oversized
		{"traceparent": {"00-" + strings.ToUpper(forgedTrace) + "-00f067aa0ba902b7-01"}},                              // not lowercase
		{"traceparent": {"01-" + forgedTrace + "-00f067aa0ba902b7-01"}},                                               // another version
		{"traceparent": {"00-" + forgedTrace + "-0000000000000000-01"}},                                               // zero span id
		{"traceparent": {"00-" + forgedTrace + "-00f067aa0ba902b7-01", "00-" + forgedTrace + "-00f067aa0ba902b8-01"}}, // twice
		{"Traceparent": {"00-" + forgedTrace + "-00f067aa0ba902b7-01"}, "traceparent": {"00-" + forgedTrace + "-00f067aa0ba902b8-01"}},
	} {
		m := nats.NewMsg("leads.forged")
		m.Data = []byte(fmt.Sprintf(`{"id":"f-%d","name":"Fay"}`, i))
		m.Header = hdr
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("f-%d", i))
		ack, err := h.js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
		run := h.waitRun(ack.Sequence)
		require.Equal(t, runlog.Succeeded, run.Status, "the event is processed as any other")
		ev := s.eventSpan(run.ID)
		require.False(t, ev.Parent.IsValid(), "case %d: a trace of its own", i)
		require.NotEqual(t, forgedTrace, ev.SpanContext.TraceID().String(), "case %d", i)
	}
	// An oversized tracestate is dropped, the valid traceparent kept.
	m := nats.NewMsg("leads.forged")
	m.Data = []byte(`{"id":"f-ts","name":"Fay"}`)
	m.Header.Set(nats.MsgIdHdr, "f-ts")
	m.Header.Set("traceparent", "00-"+forgedTrace+"-00f067aa0ba902b7-01")
	m.Header.Set("tracestate", "k="+strings.Repeat("v", 600))
	ack, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	ev := s.eventSpan(h.waitRun(ack.Sequence).ID)
	require.Equal(t, forgedTrace, ev.SpanContext.TraceID().String())
	require.Empty(t, ev.SpanContext.TraceState().String())
}

func TestUntracedWorkerWritesNoTraceAnywhere(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{config: leadConfig()})
	m := nats.NewMsg("leads.web")
	m.Data = []byte(`{"id":"u-1","name":"Gus"}`)
	m.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ack, err := h.js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
	run := h.waitRun(ack.Sequence)
	require.Equal(t, runlog.Succeeded, run.Status)
	require.Empty(t, run.TraceID)
	st, err := h.js.Stream(context.Background(), result.StreamDefault)
	require.NoError(t, err)
	res, err := st.GetLastMsgForSubject(context.Background(), result.SubjectsDefault)
	require.NoError(t, err)
	require.Empty(t, res.Header.Get(result.HeaderTraceID))
	require.Empty(t, res.Header.Get("traceparent"))
	done := h.logLines("event done")
	require.Len(t, done, 1)
	require.NotContains(t, done[0], "trace_id")
	require.NotContains(t, done[0], "span_id")
}

var _ = dlq.StreamDefault
