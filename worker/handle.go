package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

// event is one fetched message and what is known about it.
type event struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	key     string      // base of the items' default idempotency keys
	replay  *dlq.Replay // set only for a replay whose signature verified
	data    []byte      // the payload: the body, or the replay object's
	object  string      // the replay object, removed once the outcome is durable
	started time.Time
	log     zerolog.Logger
	// bulkJobs, in bulk mode, names the bulk job each item was last sent in.
	bulkJobs map[int]string
	notes    []itemNote // per item index, once its items run
	// unrecorded, in bulk mode: an item's customer exists but the ledger
	// could not record it (per-item mode notes it per item, in notes).
	unrecorded unrecorded
	spans      tracing.Message // its spans, when traced (worker/tracing.go)
}

// note returns what item i's attempts noted, if anything.
func (ev *event) note(i int) itemNote {
	if i >= 0 && i < len(ev.notes) {
		return ev.notes[i]
	}
	return itemNote{}
}

// handle processes one event to its end: acknowledged after its outcome is
// durable, nak'ed for later, or left alone for redelivery on shutdown.
func (w *Worker) handle(ctx context.Context, f *flow, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		f.log.Error().Err(err).Msg("message without JetStream metadata; leaving it for redelivery")
		return
	}
	ev := &event{
		msg:     msg,
		meta:    meta,
		data:    msg.Data(),
		started: w.cfg.Clock.Now(),
		log: f.log.With().
			Uint64("stream_seq", meta.Sequence.Stream).
			Str("subject", msg.Subject()).
			Uint64("delivery", meta.NumDelivered).Logger(),
	}
	defer keepAlive(w.cfg.Clock, msg, w.cfg.AckWait/3)()
	rp, err := w.replayKey.ReadReplay(msg.Subject(), msg.Headers(), msg.Data())
	if err != nil {
		// Whoever can publish a lead can write these headers: they are
		// ignored, and the event is a new one like any other.
		w.metrics.ForgedReplays.WithLabelValues(f.wf.Name).Inc()
		ev.log.Warn().Err(err).Msg("forged replay marker: headers ignored; processing as a new event")
	}
	ev.replay = rp
	ctx = w.traceEvent(ctx, f, ev)
	defer ev.spans.End()
	ev.key = leads.EventKey(rp, msg.Headers(), meta.Stream, meta.Sequence.Stream)
	if rp != nil {
		ev.log = ev.log.With().Uint64("replay_of", rp.Entry).Logger()
	}
	ev.log.Debug().Msg("event received")
	if rp != nil && rp.Workflow != "" && rp.Workflow != f.wf.Name {
		// A replay goes back to its original subject, which other workflows
		// may consume too: only the workflow it failed in runs it again.
		if w.runsWorkflow(rp.Workflow) || !w.firstFlowFor(f, msg.Subject()) {
			_ = msg.Ack()
			ev.log.Debug().Str("replay_workflow", rp.Workflow).Msg("replay for another workflow; skipped")
			return
		}
		// Its workflow is gone from this worker's config: one flow keeps it
		// as a dead letter again rather than every flow dropping it.
		if !w.readReplayObject(ctx, f, ev) {
			return
		}
		w.deadLetterEvent(ctx, f, ev, outcome.Mapping, fmt.Errorf(
			"worker: replay of dead letter %d is for workflow %q, which this worker does not run (its workflows: %s): restore the workflow, then replay this entry",
			rp.Entry, rp.Workflow, strings.Join(w.workflowNames(), ", ")))
		return
	}

	if !w.readReplayObject(ctx, f, ev) {
		return
	}
	trigger, err := leads.DecodeEvent(ev.data, w.cfg.MaxEventBytes)
	if err != nil {
		w.deadLetterEvent(ctx, f, ev, outcome.InvalidEvent, err)
		return
	}
	items, err := f.wf.Items(trigger)
	if err != nil {
		w.deadLetterEvent(ctx, f, ev, mapping.FailureOf(err), err)
		return
	}
	indexes, err := leads.ReplayIndexes(ev.replay, len(items))
	if err != nil {
		w.deadLetterEvent(ctx, f, ev, outcome.InvalidEvent, err)
		return
	}

	results := make(map[int]loop.Outcome, len(indexes))
	reqs := make([]mapping.Request, len(items))
	keys := make([]string, len(items))
	toRun := make([]int, 0, len(indexes))
	// Each item's mapping is bounded (mapping.TemplateMaxTime), but a long
	// Loop of slow items is not: stop at the shutdown deadline (the event
	// is kept alive meanwhile, see keepAlive).
	for _, i := range indexes {
		if ctx.Err() != nil {
			ev.log.Info().Msg("event interrupted by shutdown while mapping; left unacknowledged for redelivery")
			return
		}
		req, err := f.wf.Map(trigger, items[i], i)
		if err == nil {
			var key string
			key, err = f.wf.IdempotencyKey(trigger, items[i], i, req)
			if key == "" {
				key = ev.key + "#" + strconv.Itoa(i)
			}
			keys[i] = ledger.Key(f.wf.KeyScope(), key)
		}
		if err != nil {
			results[i] = loop.Outcome{Index: i, Status: mapping.FailureOf(err), Err: err}
			continue
		}
		reqs[i] = req
		toRun = append(toRun, i)
	}

	var run func(toRun []int) loop.Report
	if f.bulk != nil {
		run = func(toRun []int) loop.Report { return w.runBulk(ctx, f, ev, reqs, keys, toRun) }
	} else {
		ev.notes = make([]itemNote, len(items))
		run = func(toRun []int) loop.Report {
			return f.runner.Run(ctx, toRun, func(ctx context.Context, i, attempt int) (loop.Result, error) {
				return w.traceItem(ctx, f, i, attempt, func(ctx context.Context) (loop.Result, error) {
					return w.createItem(ctx, f, ev, reqs[i], keys[i], i, attempt, &ev.notes[i])
				})
			})
		}
	}
	for {
		report := run(toRun)
		if ctx.Err() != nil {
			// Shutdown deadline: what was created is in the ledger, so the
			// redelivery will find it; nothing else is recorded half-way.
			ev.log.Info().Msg("event interrupted by shutdown; left unacknowledged for redelivery")
			return
		}
		toRun = toRun[:0]
		for _, o := range report.Outcomes {
			if report.Paused && o.Status == outcome.Paused {
				toRun = append(toRun, o.Index) // to run again once resumed
				continue
			}
			results[o.Index] = o
		}
		if !report.Paused {
			break
		}
		// The workflow paused: the event is held, kept alive, until it
		// resumes, then its paused items run again. A nak would spend one of
		// the event's deliveries at every pause, and a workflow that pauses
		// and resumes again and again (a role that may read but not create:
		// the probe passes) would end the event as max_deliveries.
		if !w.holdWhilePaused(ctx, f, ev) {
			if ctx.Err() == nil { // stopping: back to the stream for another replica
				_ = msg.NakWithDelay(w.cfg.PauseNakDelay)
				ev.log.Info().Stringer("delay", w.cfg.PauseNakDelay).Msg("workflow paused and the worker stopping; event nak'ed without spending attempts")
			}
			return
		}
	}
	ordered := make([]loop.Outcome, 0, len(indexes))
	for _, i := range indexes {
		ordered = append(ordered, results[i])
	}
	w.finish(ctx, f, ev, ordered)
}

// holdWhilePaused keeps the event unacknowledged (and, by keepAlive,
// alive) while the workflow is paused. It returns true once the workflow
// resumed, false when the worker stops fetching (draining) or ctx ends
// first.
func (w *Worker) holdWhilePaused(ctx context.Context, f *flow, ev *event) bool {
	ev.log.Info().Msg("workflow paused; event held until it resumes")
	defer ev.tracePaused(ctx)()
	resumed := f.whenRunning()
	select {
	case <-resumed:
	default:
		select {
		case <-resumed:
		case <-f.draining:
			return false
		case <-ctx.Done():
			return false
		}
	}
	ev.log.Info().Msg("workflow resumed; running the event's paused items again")
	return true
}

// readReplayObject sets ev.data to the event's payload: its body, or, for a
// verified replay too large for one message, its replay object's payload
// (and the replay's items to the object's). It returns false when the event
// was dealt with here: dead-lettered because its object is gone, or left
// for redelivery.
func (w *Worker) readReplayObject(ctx context.Context, f *flow, ev *event) bool {
	if ev.replay == nil || ev.replay.Object == "" {
		return true
	}
	o, err := dlq.LoadReplayObject(ctx, w.js, ev.replay.Object)
	switch {
	case errors.Is(err, dlq.ErrObjectGone) || errors.Is(err, dlq.ErrNotReplayObject):
		w.deadLetterEvent(ctx, f, ev, outcome.InvalidEvent, err)
		return false
	case err != nil:
		w.nakAfterFailure(ev, "read replay object", err)
		return false
	}
	ev.data, ev.object, ev.replay.Items = o.Payload, ev.replay.Object, o.Items
	return true
}

// deadLetterEvent dead-letters a whole event that cannot be processed at all.
func (w *Worker) deadLetterEvent(ctx context.Context, f *flow, ev *event, class outcome.Outcome, err error) {
	w.finish(ctx, f, ev, []loop.Outcome{{Index: -1, Status: class, Err: err}})
}

// finish makes the event's outcome durable — results, dead letters, run
// record, in that order — and only then acknowledges it. If any step fails,
// the event is nak'ed and will be processed again (the ledger keeps created
// items from being created twice).
func (w *Worker) finish(ctx context.Context, f *flow, ev *event, items []loop.Outcome) {
	ctx = context.WithoutCancel(ctx)
	if bool(ev.unrecorded) || slices.ContainsFunc(ev.notes, func(n itemNote) bool { return bool(n.unrecorded) }) {
		// A customer the ledger does not know of: acknowledged, a later
		// event with the same key could create it again.
		w.nakAfterFailure(ev, "ledger record", errors.New("worker: a customer created or found is not recorded in the ledger"))
		return
	}
	now := w.cfg.Clock.Now()
	rec := runlog.Record{
		ID:        ev.runID(f.wf.Name),
		Workflow:  f.wf.Name,
		EventID:   leads.EventID(ev.replay, ev.msg.Headers()),
		Subject:   ev.msg.Subject(),
		StreamSeq: ev.meta.Sequence.Stream,
		Started:   ev.started,
		Ended:     now,
		Replay:    ev.replay != nil,
		ReplayOf:  runlog.NewReplay(ev.replay),
		TraceID:   ev.spans.TraceID(),
	}
	failed := map[outcome.Outcome][]loop.Outcome{}
	var classes []outcome.Outcome
	results := result.NewBatch(w.js)
	var ok, bad int
	var succeeded []loop.Outcome
	var resultsErr error // the first result not stored: all are published again
	for _, it := range items {
		ri := runlog.Item{Index: it.Index, Outcome: it.Status, CustomerID: it.CustomerID, Attempts: it.Attempts, BulkJob: ev.bulkJobs[it.Index], Dropped: ev.note(it.Index).dropped}
		switch {
		case it.Status.Succeeded():
			ok++
			succeeded = append(succeeded, it)
			if resultsErr != nil {
				break
			}
			resultsErr = w.publishResult(ctx, results, f, ev, it)
		default:
			bad++
			if it.Err != nil {
				ri.Error = it.Err.Error()
			}
			if _, seen := failed[it.Status]; !seen {
				classes = append(classes, it.Status)
			}
			failed[it.Status] = append(failed[it.Status], it)
		}
		if it.Index >= 0 {
			rec.Items = append(rec.Items, ri)
		} else if it.Err != nil {
			rec.Error = it.Err.Error()
		}
		w.metrics.Items.WithLabelValues(f.wf.Name, it.Status.Summary()).Inc()
		w.metrics.Retries.WithLabelValues(f.wf.Name).Add(float64(max(it.Attempts-1, 0)))
	}
	// The results were published together; all must be stored before the
	// run record says so.
	if resultsErr == nil {
		resultsErr = results.Wait(ctx)
	}
	if resultsErr != nil {
		// Published again, all of them: the results stream drops those it
		// stored already (their Nats-Msg-Id).
		first := true
		if !w.persist(ctx, f, ev, "publish the results to stream "+w.cfg.ResultsStream, func(ctx context.Context) error {
			if first {
				first = false
				return resultsErr
			}
			return w.publishResults(ctx, f, ev, succeeded)
		}) {
			return
		}
	}
	for _, class := range classes {
		if !w.persist(ctx, f, ev, "store the dead letter", func(ctx context.Context) error {
			return w.deadLetter(ctx, f, ev, rec.ID, class, failed[class])
		}) {
			return
		}
	}
	switch {
	case bad == 0:
		rec.Status = runlog.Succeeded
	case len(items) == 1 && items[0].Index < 0:
		rec.Status = runlog.DeadLettered
	case ok > 0:
		rec.Status = runlog.Partial
	default:
		rec.Status = runlog.Failed
	}
	if !w.persist(ctx, f, ev, "write the run record", func(ctx context.Context) error { return w.runs.Write(ctx, rec) }) {
		return
	}
	if err := w.ack(ctx, ev, rec.Status); err != nil {
		ev.log.Warn().Err(err).Msg("ack not confirmed; the event may be redelivered (its items are in the ledger)")
		return
	}
	if ev.object != "" {
		if err := dlq.DeleteReplayObject(ctx, w.js, ev.object); err != nil {
			ev.log.Warn().Err(err).Msg("replay object not removed; it is no longer needed")
		}
	}
	w.metrics.Events.WithLabelValues(f.wf.Name, string(rec.Status)).Inc()
	w.metrics.EventSeconds.WithLabelValues(f.wf.Name).Observe(now.Sub(ev.started).Seconds())
	ev.log.Info().Str("status", string(rec.Status)).Int("created", ok).Int("failed", bad).Str("run_id", rec.ID).Msg("event done")
}

func (w *Worker) nakAfterFailure(ev *event, step string, err error) {
	ev.log.Error().Err(err).Str("step", step).Msg("outcome not durable; event nak'ed for redelivery")
	ev.spans.Fail(step, err)
	_ = ev.msg.NakWithDelay(time.Second)
}

// deadLetter publishes one record for the event's items that failed with
// class: the original payload byte for byte, and why in its headers.
func (w *Worker) deadLetter(ctx context.Context, f *flow, ev *event, runID string, class outcome.Outcome, items []loop.Outcome) error {
	first := items[0]
	rec := leads.EventRecord(ev.replay, ev.msg.Subject(), ev.meta.Stream, ev.meta.Sequence.Stream, ev.msg.Headers(), ev.data)
	rec.Workflow = cmp.Or(rec.Workflow, f.wf.Name)
	rec.Class = class
	rec.Run = runID
	rec.TraceID, rec.SpanID = ev.spans.IDs()
	rec.Items = nil
	rec = withError(rec, first.Err)
	if len(items) > 1 {
		rec.Error = fmt.Sprintf("%s (and %d more items)", rec.Error, len(items)-1)
	}
	for _, it := range items {
		rec.Attempts = max(rec.Attempts, it.Attempts)
		if it.Index >= 0 {
			rec.Items = append(rec.Items, it.Index)
		}
		if !it.FirstFailure.IsZero() && (rec.FirstFailure.IsZero() || it.FirstFailure.Before(rec.FirstFailure)) {
			rec.FirstFailure = it.FirstFailure
		}
		if it.LastFailure.After(rec.LastFailure) {
			rec.LastFailure = it.LastFailure
		}
	}
	if rec.LastFailure.IsZero() {
		rec.LastFailure = w.cfg.Clock.Now()
	}
	if rec.FirstFailure.IsZero() {
		rec.FirstFailure = rec.LastFailure
	}
	if err := dlq.Publish(ctx, w.js, f.wf.DeadLetterSubject, rec); err != nil {
		return err
	}
	w.metrics.DeadLetters.WithLabelValues(f.wf.Name, class.String()).Inc()
	// A Loop of thousands of failed items: the log line names them as
	// ranges, cut to a bounded length; the dead letter has them all.
	shown := dlq.FormatItems(rec.Items)
	if cut := strings.LastIndexByte(shown[:min(len(shown), 256)], ','); len(shown) > 256 && cut > 0 {
		shown = shown[:cut] + ",…"
	}
	l := ev.log.Warn().Str("class", class.String()).Str("items", shown).Int("item_count", len(rec.Items)).Str("error", rec.Error)
	if rec.ReplayedFrom != 0 {
		l = l.Uint64("replayed_from", rec.ReplayedFrom).Int("replays", rec.Replays)
	}
	l.Msg("dead-lettered")
	return nil
}

// publishResults publishes the results of items and waits until all are
// stored.
func (w *Worker) publishResults(ctx context.Context, f *flow, ev *event, items []loop.Outcome) error {
	b := result.NewBatch(w.js)
	for _, it := range items {
		if err := w.publishResult(ctx, b, f, ev, it); err != nil {
			return err
		}
	}
	return b.Wait(ctx)
}

// publishResult publishes one item's result in b, carrying ev's trace
// context.
func (w *Worker) publishResult(ctx context.Context, b *result.Batch, f *flow, ev *event, it loop.Outcome) error {
	m, err := result.Result{
		Workflow:   f.wf.Name,
		EventID:    leads.EventID(ev.replay, ev.msg.Headers()),
		StreamSeq:  ev.meta.Sequence.Stream,
		Item:       it.Index,
		CustomerID: it.CustomerID,
		Outcome:    it.Status,
		Attributes: it.Attributes,
		Sent:       ev.note(it.Index).sent,
	}.Msg(f.wf.ResultsSubject)
	if err != nil {
		return err
	}
	ev.spans.Inject(m.Header, result.HeaderTraceID)
	return b.Publish(ctx, m)
}

// runID names the run of one delivery of an event in one workflow:
// <stream>-<sequence>-<delivery>-<workflow>, e.g. LEADS-1-1-default. The
// workflow is part of it because workflows whose subjects overlap each run
// the same delivery.
func (ev *event) runID(workflow string) string {
	return fmt.Sprintf("%s-%d-%d-%s", ev.meta.Stream, ev.meta.Sequence.Stream, ev.meta.NumDelivered, workflow)
}

// withError returns r with Error set from err and, when err holds
// Kustomer's answer, its HTTP status and error code: dlq holds them as
// plain fields and knows nothing of the Kustomer client.
func withError(r dlq.Record, err error) dlq.Record {
	if err == nil {
		return r
	}
	r.Error = err.Error()
	var ke *kustomer.Error
	if errors.As(err, &ke) {
		r.StatusCode, r.Code = ke.StatusCode, ke.Code
	}
	return r
}

func retryPolicy(r mapping.Retry) loop.Policy {
	return loop.Policy{
		MaxAttempts:  r.MaxAttempts,
		InitialDelay: r.InitialDelay,
		MaxDelay:     r.MaxDelay,
		Multiplier:   r.Multiplier,
		Jitter:       r.Jitter,
	}
}
