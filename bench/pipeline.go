package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// PipelineFloor is the pipeline run that is no mode of the worker: a bare
// loop that fetches an event, POSTs its customer and acknowledges it, the
// least any consumer of the same stream and the same sandbox can spend.
const PipelineFloor = "floor"

// Defaults of [PipelineConfig].
const (
	PipelineEventsDefault = 60000
	// pipelineConcurrency is how many events the floor and per-item mode
	// work on at once (the per-item workflow's max_in_flight).
	pipelineConcurrency = 64
)

// PipelineConfig is one run of the pipeline benchmark: a backlog drained
// with the budget out of the way (the sandbox unlimited, the workers'
// budget far above what they can spend) and no sandbox latency, so that
// what limits it is the process's own work per customer.
type PipelineConfig struct {
	Kind   string // PipelineFloor, mapping.ModePerItem or mapping.ModeBulk
	Events int    // default PipelineEventsDefault
	// Limit ends a run that has not drained by then.
	Limit time.Duration
	// ProfileDir, when set, receives <Kind>.pprof, the run's CPU profile.
	ProfileDir  string
	NATSOptions []nats.Option
	Logger      zerolog.Logger
}

// PipelineReport is what one pipeline run measured, from the consumers'
// start to the last acknowledgement.
type PipelineReport struct {
	Config   PipelineConfig
	Created  int // customers in the sandbox
	Acked    bool
	Elapsed  time.Duration
	CPU      time.Duration // user and system time of this whole process: NATS server, sandbox and consumers
	Requests int           // requests the sandbox received
	Writes   int           // floor+writes: the JetStream writes it made (4 a customer)
	Profile  string        // the CPU profile written, if any
}

// PerSecond is the customers created per second.
func (r PipelineReport) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Created) / r.Elapsed.Seconds()
}

// CPUPerCustomer is the process's CPU time per customer created.
func (r PipelineReport) CPUPerCustomer() time.Duration {
	if r.Created == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Created)
}

// RunPipeline drains a backlog of single-lead events in one way (pc.Kind)
// and measures the time and the CPU it took.
func RunPipeline(ctx context.Context, pc PipelineConfig) (_ PipelineReport, err error) {
	pc.Events = cmp.Or(pc.Events, PipelineEventsDefault)
	rep := PipelineReport{Config: pc}
	if pc.Limit <= 0 || pc.Events < 1 {
		return rep, errors.New("bench: pipeline config: Limit and Events must be positive")
	}
	var cfg *mapping.Config
	switch pc.Kind {
	case PipelineFloor, PipelineFloorWrites:
	case mapping.ModePerItem, mapping.ModeBulk:
		inFlight := pipelineConcurrency
		if pc.Kind == mapping.ModeBulk {
			inFlight = modeMaxInFlight
		}
		// The mode benchmark's workflow: results and run log on, as in any deployment.
		if cfg, err = mapping.Parse("bench.yaml", fmt.Appendf(nil, modeWorkflow, pc.Kind, inFlight, mapping.BulkJobTimeoutDefault)); err != nil {
			return rep, err
		}
	default:
		return rep, fmt.Errorf("bench: pipeline kind %q: want %s, %s, %s or %s", pc.Kind, PipelineFloor, PipelineFloorWrites, mapping.ModePerItem, mapping.ModeBulk)
	}
	bl, err := newBacklog(ctx, pc.Events, 1, sandbox.Config{RatePerMinute: -1}, pc.NATSOptions, pc.Logger)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, bl.close(ctx)) }()

	if pc.ProfileDir != "" {
		rep.Profile = filepath.Join(pc.ProfileDir, pc.Kind+".pprof")
		stop, err := startProfile(rep.Profile)
		if err != nil {
			return rep, err
		}
		defer stop()
	}
	cpu0, start := processCPU(), time.Now()
	var drained func() (bool, error)
	var writes *floorWrites
	if pc.Kind == PipelineFloor || pc.Kind == PipelineFloorWrites {
		if pc.Kind == PipelineFloorWrites {
			if writes, err = newFloorWrites(ctx, bl.js); err != nil {
				return rep, err
			}
		}
		stop, done, err := runFloor(ctx, bl, pc.Events, writes)
		if err != nil {
			return rep, err
		}
		defer stop()
		drained = func() (bool, error) { return done(), nil }

	} else {
		stop, err := startReplica(ctx, bl.ns.ClientURL(), Config{NATSOptions: pc.NATSOptions}, worker.Config{
			Workflows:     cfg.Workflows,
			Kustomer:      kustomer.Config{BaseURL: bl.sb.URL, APIKey: "bench"},
			RatePerMinute: 1_000_000_000, // the budget out of the way
			ReplicaID:     "bench-0",
			Logger:        pc.Logger.Level(max(pc.Logger.GetLevel(), zerolog.WarnLevel)),
		})
		if err != nil {
			return rep, err
		}
		defer stop()
		drained = func() (bool, error) { return allAcked(ctx, bl.js, pc.Events) }
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !rep.Acked && rep.Elapsed < pc.Limit {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		if rep.Acked, err = drained(); err != nil {
			return rep, err
		}
		rep.Elapsed = time.Since(start)
	}
	rep.CPU = processCPU() - cpu0
	if writes != nil {
		rep.Writes = int(writes.stored.Load())
	}
	st := bl.sb.Sandbox.Stats()
	rep.Created, rep.Requests = st.Creates, st.Requests
	return rep, nil
}

// allAcked reports whether every consumer of the stream has acknowledged
// all of its events.
func allAcked(ctx context.Context, js jetstream.JetStream, events int) (bool, error) {
	st, err := js.Stream(ctx, leads.StreamDefault)
	if err != nil {
		return false, fmt.Errorf("bench: %w", err)
	}
	names := st.ConsumerNames(ctx)
	n := 0
	for name := range names.Name() {
		c, err := st.Consumer(ctx, name)
		if err != nil {
			return false, fmt.Errorf("bench: %w", err)
		}
		info := c.CachedInfo()
		if info.NumPending > 0 || info.NumAckPending > 0 || info.AckFloor.Stream < uint64(events) {
			return false, nil
		}
		n++
	}
	return n > 0, names.Err()
}

// floorLead is what the floor reads of an event.
type floorLead struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// runFloor starts the bare loop: pipelineConcurrency goroutines, each
// taking a fetched event, POSTing its customer and acknowledging it, with
// no ledger, results, run log or retries; with writes, it also makes
// per-item mode's JetStream writes around the POST. done reports whether
// all events were acknowledged.
func runFloor(ctx context.Context, bl *backlog, events int, writes *floorWrites) (stop func(), done func() bool, err error) {
	cons, err := bl.js.CreateOrUpdateConsumer(ctx, leads.StreamDefault, jetstream.ConsumerConfig{
		Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: pipelineConcurrency * 16,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: floor consumer: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: pipelineConcurrency}}
	url := bl.sb.URL + "/v1/customers"
	msgs := make(chan jetstream.Msg, pipelineConcurrency)
	var acked atomic.Int64
	var wg sync.WaitGroup
	for range pipelineConcurrency {
		wg.Go(func() {
			for msg := range msgs {
				if floorOne(ctx, client, url, msg, writes) && msg.Ack() == nil {
					acked.Add(1)
				}
			}
		})
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { msgs <- msg }, jetstream.PullMaxMessages(pipelineConcurrency*4))
	if err != nil {
		close(msgs)
		return nil, nil, fmt.Errorf("bench: floor consume: %w", err)
	}
	return func() {
			cc.Stop()
			<-cc.Closed()
			close(msgs)
			wg.Wait()
			client.CloseIdleConnections()
		}, func() bool {
			return acked.Load() >= int64(events)
		}, nil
}

// floorOne POSTs the customer of one event of the floor, with writes its
// JetStream writes around the POST, and reports whether the event is done:
// otherwise it was nak'ed or terminated.
func floorOne(ctx context.Context, client *http.Client, url string, msg jetstream.Msg, writes *floorWrites) bool {
	var l floorLead
	if json.Unmarshal(msg.Data(), &l) != nil {
		_ = msg.Term()
		return false
	}
	body, _ := json.Marshal(map[string]any{"externalId": l.ID, "name": l.Name, "emails": []map[string]string{{"email": l.Email}}})
	var key string
	if writes != nil {
		var err error
		// A redelivered event finds its own claim: the floor takes no claim over.
		if key, err = writes.claim(ctx, l.ID); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			_ = msg.Nak()
			return false
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		_ = msg.Nak()
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		_ = msg.Nak()
		return false
	}
	var answer []byte
	if writes != nil {
		answer, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		_ = msg.Nak()
		return false
	}
	if writes != nil && writes.created(ctx, msg, key, body, answer) != nil {
		_ = msg.Nak()
		return false
	}
	return true
}

// startProfile writes this process's CPU profile to path until stop.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: --profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: --profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
