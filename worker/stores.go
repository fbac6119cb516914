package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
	"github.com/kustomer-sync/kustomer-sync/subject"
)

// ensureStores creates, or updates, what the worker writes besides the
// leads stream: the results stream, the dead-letter stream and its payload
// bucket, the run log, the ledger and the replay key.
func (w *Worker) ensureStores(ctx context.Context, workflows []*mapping.Workflow) (*runlog.Log, *ledger.Ledger, *dlq.ReplayKey, error) {
	var results, deadLetters []string
	for _, wf := range workflows {
		results = append(results, wf.ResultsSubject)
		deadLetters = append(deadLetters, wf.DeadLetterSubject)
	}
	subjects := leads.WithUncovered([]string{result.SubjectsDefault}, results)
	if _, err := leads.EnsureStream(ctx, w.js, result.Stream(w.cfg.ResultsStream, w.cfg.Stream.Replicas, subjects), nil); err != nil {
		return nil, nil, nil, err
	}
	dl := w.deadLetterConfig(deadLetters)
	if _, err := dlq.EnsureStream(ctx, w.js, dl); err != nil {
		return nil, nil, nil, subject.ExplainOverlap(ctx, w.js, jetstream.StreamConfig{Name: cmp.Or(dl.Name, dlq.StreamDefault), Subjects: dl.Subjects}, nil, err)
	}
	runs, err := runlog.New(ctx, w.js, w.runLogConfig())
	if err != nil {
		return nil, nil, nil, err
	}
	led, err := ledger.Open(ctx, w.js, w.ledgerConfig(), w.cfg.ReplicaID, w.cfg.Clock.Now)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := dlq.LoadReplayKey(ctx, w.js, w.cfg.KeyBucket, w.cfg.Stream.Replicas)
	if err != nil {
		return nil, nil, nil, err
	}
	return runs, led, key, nil
}

func (w *Worker) deadLetterConfig(deadLetters []string) dlq.StreamConfig {
	dl := w.cfg.DeadLetter
	if dl.Replicas == 0 {
		dl.Replicas = w.cfg.Stream.Replicas
	}
	// A workflow's own dead-letter subject is captured too.
	if len(dl.Subjects) == 0 {
		dl.Subjects = []string{dlq.SubjectsDefault}
	}
	dl.Subjects = leads.WithUncovered(dl.Subjects, deadLetters)
	return dl
}

func (w *Worker) runLogConfig() runlog.Config {
	rl := w.cfg.RunLog
	if rl.Replicas == 0 {
		rl.Replicas = w.cfg.Stream.Replicas
	}
	return rl
}

func (w *Worker) ledgerConfig() ledger.Config {
	lc := w.cfg.Ledger
	if lc.Replicas == 0 {
		lc.Replicas = w.cfg.Stream.Replicas
	}
	return lc
}

// store is one stream or bucket the worker writes to, by the name of the
// stream behind it.
type store struct {
	stream string // the JetStream stream (KV_<bucket>, OBJ_<bucket> for buckets)
	what   string // what it is, for the log
}

func (w *Worker) stores() []store {
	rl := w.runLogConfig().WithDefaults()
	return []store{
		{w.cfg.ResultsStream, "results stream " + w.cfg.ResultsStream},
		{cmp.Or(w.cfg.DeadLetter.Name, dlq.StreamDefault), "dead-letter stream " + cmp.Or(w.cfg.DeadLetter.Name, dlq.StreamDefault)},
		{"OBJ_" + dlq.PayloadsBucket, "dead-letter payload bucket " + dlq.PayloadsBucket},
		{rl.Stream, "run log stream " + rl.Stream},
		{"OBJ_" + rl.Bucket, "run log bucket " + rl.Bucket},
		{"KV_" + cmp.Or(w.cfg.Ledger.Bucket, ledger.BucketDefault), "ledger bucket " + cmp.Or(w.cfg.Ledger.Bucket, ledger.BucketDefault)},
	}
}

// repairStores recreates the streams and buckets the worker writes to that
// were deleted while it runs, with one warn line each, and reports whether
// it recreated any. One repair runs at a time; events that fail together
// wait for it rather than each repairing.
func (w *Worker) repairStores(ctx context.Context) bool {
	w.repairMu.Lock()
	defer w.repairMu.Unlock()
	var missing []store
	for _, s := range w.stores() {
		if _, err := w.js.Stream(ctx, s.stream); errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return false
	}
	var workflows []*mapping.Workflow
	if flows := w.running.Load(); flows != nil {
		for _, f := range *flows {
			workflows = append(workflows, f.wf)
		}
	}
	if _, _, _, err := w.ensureStores(ctx, workflows); err != nil {
		w.log.Error().Err(err).Msg("cannot recreate what was deleted while running; trying again at the next failure")
		return false
	}
	for _, s := range missing {
		w.log.Warn().Str("stream", s.stream).Msg(s.what + " was deleted while the worker runs: recreated")
	}
	return true
}

// storeHoldRetry is how often an event held because its outcome cannot be
// stored tries again.
const storeHoldRetry = 2 * time.Second

// persist runs step, a write that makes an event's outcome durable (a
// result, a dead letter, the run record). When it fails, what was deleted
// is recreated and the write tried again; while it still fails (a full
// dead-letter stream, say), the workflow pauses, saying why, and the event
// is held, kept alive (keepAlive) and without spending a delivery, as
// during a pause, until the write succeeds. It returns false when the
// worker stops first: the event is then nak'ed for another replica.
func (w *Worker) persist(ctx context.Context, f *flow, ev *event, step string, write func(context.Context) error) bool {
	err := write(ctx)
	if err == nil {
		return true
	}
	if w.repairStores(ctx) {
		if err = write(ctx); err == nil {
			return true
		}
	}
	reason := fmt.Sprintf("cannot %s: %v", step, err)
	f.storePaused(reason, w.cfg.Clock.Now())
	w.budget.Refresh()
	ev.log.Error().Err(err).Str("step", step).Msg("workflow paused: its outcome cannot be stored; event held, without spending a delivery, until it can")
	for {
		t := w.cfg.Clock.NewTimer(min(storeHoldRetry, w.cfg.AckWait/3))
		select {
		case <-t.C():
		case <-f.draining:
			t.Stop()
			_ = ev.msg.NakWithDelay(w.cfg.PauseNakDelay)
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		}
		w.repairStores(ctx)
		if err := write(ctx); err == nil {
			if f.storeResumed(w.cfg.Clock.Now()) {
				f.log.Info().Str("step", step).Msg("workflow resumed: its outcomes can be stored again")
				w.budget.Refresh()
			}
			return true
		}
	}
}
