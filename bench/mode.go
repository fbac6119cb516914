package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// Defaults of [ModeConfig].
const (
	EventsDefault    = 100000
	BulkDelayDefault = 2 * time.Second
	// modeMaxInFlight is the workflow's max_in_flight: enough single-lead
	// events to keep a budget of 1,000 a minute busy with full batches
	// while jobs of a few seconds run.
	modeMaxInFlight = 5000
)

// modeWorkflow is the mode benchmark's workflow: one lead per event, its id
// as externalId (so the sandbox counts duplicates), in the given mode.
const modeWorkflow = `workflows:
  - name: bench
    subject: "leads.>"
    start: all
    mode: %s
    max_in_flight: %d
    bulk_job_timeout: %s
    inputs:
      externalId: "{{trigger.id}}"
      name: "{{trigger.name}}"
      emails: "{{trigger.email}}"
`

// modeLoopWorkflow is modeWorkflow for events of many leads, a Loop over
// "leads".
const modeLoopWorkflow = `workflows:
  - name: bench
    subject: "leads.>"
    start: all
    mode: %s
    max_in_flight: %d
    bulk_job_timeout: %s
    loop: "{{trigger.leads}}"
    inputs:
      externalId: "{{item.id}}"
      name: "{{item.name}}"
      emails: "{{item.email}}"
`

// ModeConfig is one run of a backlog in one mode. Zero fields take their
// defaults (those of [Config] for the budget).
type ModeConfig struct {
	Mode      string        // mapping.ModeBulk or mapping.ModePerItem
	Events    int           // single-lead events in the backlog; default EventsDefault
	Rate      int           // budget per Window; default RateDefault
	Window    time.Duration // default WindowDefault
	Latency   time.Duration // default LatencyDefault
	BulkDelay time.Duration // how long a bulk job takes; default BulkDelayDefault
	Replicas  int           // default ReplicasDefault
	// JobModel is the sandbox's job model, one of sandbox.JobModels;
	// default sandbox.JobModelParallel.
	JobModel string
	// PerEvent is how many leads an event holds (a Loop over them when
	// more than 1); default 1. Events is then the number of leads.
	PerEvent int
	// BulkJobTimeout is the workflow's bulk_job_timeout; default the
	// workflow's (30 minutes), but with JobModelLost three times BulkDelay,
	// at least 10 s, so that the items of lost answers are found within
	// the run.
	BulkJobTimeout time.Duration
	// LostRate, with JobModelLost, is the share of bulk submissions whose
	// answer is lost; default the model's (1 in 100).
	LostRate float64
	// MaxInFlight is the workflow's max_in_flight; default modeMaxInFlight
	// for single-lead events, the workflow's default for Loop events.
	MaxInFlight int
	// Binary, when set, runs each replica as a process of this
	// kustomer-sync executable (`run`) instead of in this process, and
	// PeakRSS is then the replicas' own peak memory.
	Binary string
	// LogDir, with Binary, keeps each replica's log (JSON, level info) in
	// LogDir/<replica id>.log; without it the logs are dropped.
	LogDir string
	// Limit ends the run when not every event is done by then.
	Limit time.Duration
	// Profile, when set, receives this process's CPU profile of the drain
	// (NATS server, sandbox and in-process replicas; not the replicas run
	// as processes), for go tool pprof.
	Profile string
	// Progress, when set, is called about every ProgressEvery (default
	// 10 s).
	Progress      func(elapsed time.Duration, created, requests int)
	ProgressEvery time.Duration
	NATSOptions   []nats.Option
	Logger        zerolog.Logger
}

// ModeReport is what a mode run achieved.
type ModeReport struct {
	Config  ModeConfig // with its defaults
	Created int
	// DeadLetters counts the dead letters written: every lead of the
	// backlog is valid, so each is a false one.
	DeadLetters int
	// DeadLetterReasons counts the dead letters by class and error (its
	// first 200 characters): why each one was written.
	DeadLetterReasons map[string]int
	// PeakRSS is this process's peak resident memory (VmHWM) at the end,
	// in bytes, everything included: NATS server, sandbox, workers.
	PeakRSS  int64
	Elapsed  time.Duration // from the workers' start until every event was created and acknowledged, or to Limit
	Finished bool          // every event created, and acknowledged: its outcome durable
	// Projected is, for an unfinished run, the time every event would take
	// at the rate measured.
	Projected time.Duration
	Stats     sandbox.Stats
}

// sandboxConfig is the sandbox of mc: its budget, latency and job model
// (with LostRate, when set, for JobModelLost).
func (mc ModeConfig) sandboxConfig() (sandbox.Config, error) {
	sc := sandbox.Config{RatePerMinute: mc.Rate, Window: mc.Window, Latency: mc.Latency, BulkDelay: mc.BulkDelay}
	if err := sc.SetJobModel(mc.JobModel); err != nil {
		return sc, fmt.Errorf("bench: %w", err)
	}
	if mc.LostRate > 0 && mc.JobModel == sandbox.JobModelLost {
		sc.BulkSubmitLostRate = mc.LostRate
	}
	return sc, nil
}

// RunMode publishes the backlog first, as a batch sync meets it, then starts
// the workers and measures until every lead has its customer or Limit.
func RunMode(ctx context.Context, mc ModeConfig) (_ ModeReport, err error) {
	mc.Events = cmp.Or(mc.Events, EventsDefault)
	mc.BulkDelay = cmp.Or(mc.BulkDelay, BulkDelayDefault)
	mc.JobModel = cmp.Or(mc.JobModel, sandbox.JobModelParallel)
	mc.PerEvent = max(mc.PerEvent, 1)
	if mc.BulkJobTimeout == 0 {
		mc.BulkJobTimeout = mapping.BulkJobTimeoutDefault
		if mc.JobModel == sandbox.JobModelLost {
			mc.BulkJobTimeout = max(3*mc.BulkDelay, 10*time.Second)
		}
	}
	bc, err := Config{Rate: mc.Rate, Window: mc.Window, Latency: mc.Latency, Replicas: mc.Replicas, NATSOptions: mc.NATSOptions, Logger: mc.Logger}.withDefaults()
	if err != nil {
		return ModeReport{}, err
	}
	mc.Rate, mc.Window, mc.Latency, mc.Replicas = bc.Rate, bc.Window, bc.Latency, bc.Replicas
	rep := ModeReport{Config: mc}
	if mc.Limit <= 0 || mc.Events < 1 {
		return rep, errors.New("bench: mode config: Limit and Events must be positive")
	}
	wf, inFlight := modeWorkflow, cmp.Or(mc.MaxInFlight, modeMaxInFlight)
	if mc.PerEvent > 1 {
		wf, inFlight = modeLoopWorkflow, cmp.Or(mc.MaxInFlight, mapping.MaxInFlightBulkDefault)
	}
	cfg, err := mapping.Parse("bench.yaml", fmt.Appendf(nil, wf, mc.Mode, inFlight, mc.BulkJobTimeout))
	if err != nil {
		return rep, err
	}
	sc, err := mc.sandboxConfig()
	if err != nil {
		return rep, err
	}
	bl, err := newBacklog(ctx, mc.Events, mc.PerEvent, sc, mc.NATSOptions, mc.Logger)
	if err != nil {
		return rep, err
	}
	defer func() { err = errors.Join(err, bl.close(ctx)) }()
	sb := bl.sb

	perMinute := int(float64(mc.Rate) * float64(time.Minute) / float64(mc.Window))
	ResetPeakRSS() // the backlog is published: the peak from here is the drain's
	if mc.Profile != "" {
		stop, err := startProfile(mc.Profile)
		if err != nil {
			return rep, err
		}
		defer stop()
	}
	start := time.Now()
	var procs []*replicaProc
	for i := range mc.Replicas {
		if mc.Binary != "" {
			p, err := startReplicaProcess(ctx, mc.Binary, bl, fmt.Appendf(nil, wf, mc.Mode, inFlight, mc.BulkJobTimeout), fmt.Sprintf("bench-%d", i), perMinute, mc.LogDir)
			if err != nil {
				return rep, err
			}
			defer p.stop()
			procs = append(procs, p)
			continue
		}
		stop, err := startReplica(ctx, bl.ns.ClientURL(), bc, worker.Config{
			Workflows:     cfg.Workflows,
			Kustomer:      kustomer.Config{BaseURL: sb.URL, APIKey: "bench"},
			RatePerMinute: perMinute,
			ReplicaID:     fmt.Sprintf("bench-%d", i),
			Logger:        mc.Logger.Level(max(mc.Logger.GetLevel(), zerolog.WarnLevel)),
		})
		if err != nil {
			return rep, err
		}
		defer stop()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := start
	for !rep.Finished && rep.Elapsed < mc.Limit {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		now := time.Now()
		// Stats, not CountByExternalID: a copy of a million-entry index
		// four times a second would hold the sandbox up.
		st := sb.Stats()
		rep.Created, rep.Elapsed = st.ExternalIDs, now.Sub(start)
		if rep.Created >= mc.Events {
			// Created in Kustomer; done once the workers have made every
			// outcome durable (ledger, results, run log) and acknowledged it.
			if rep.Finished, err = allAcked(ctx, bl.js, (mc.Events+mc.PerEvent-1)/mc.PerEvent); err != nil {
				return rep, err
			}
		}
		if mc.Progress != nil && now.Sub(last) >= cmp.Or(mc.ProgressEvery, 10*time.Second) {
			last = now
			mc.Progress(rep.Elapsed, rep.Created, st.Requests)
		}
	}
	rep.Stats = sb.Stats()
	if dl, err := bl.js.Stream(ctx, dlq.StreamDefault); err == nil {
		if info, err := dl.Info(ctx); err == nil {
			rep.DeadLetters = int(info.State.Msgs)
		}
	}
	if rep.DeadLetters > 0 {
		rep.DeadLetterReasons = map[string]int{}
		if st, err := dlq.OpenStore(ctx, bl.js, dlq.StreamDefault); err == nil {
			recs, _ := st.List(ctx, dlq.Filter{})
			for _, r := range recs {
				e := r.Error
				if len(e) > 200 {
					e = e[:200] + "…"
				}
				rep.DeadLetterReasons[fmt.Sprintf("%s: %s", r.Class, e)]++
			}
		}
	}
	rep.PeakRSS = PeakRSS()
	if len(procs) > 0 {
		rep.PeakRSS = 0
		for _, p := range procs {
			rep.PeakRSS = max(rep.PeakRSS, p.peakRSS())
		}
	}
	if !rep.Finished && rep.Created > 0 {
		rep.Projected = time.Duration(float64(rep.Elapsed) * float64(mc.Events) / float64(rep.Created))
	}
	return rep, nil
}

// replicaProc is a replica run as a process of the kustomer-sync binary.
type replicaProc struct {
	cmd *exec.Cmd
	dir string
}

// startReplicaProcess runs `binary run` with the workflow config against
// the backlog's NATS server and sandbox.
func startReplicaProcess(ctx context.Context, binary string, bl *backlog, config []byte, id string, perMinute int, logDir string) (*replicaProc, error) {
	dir, err := os.MkdirTemp("", "kustomer-sync-bench-replica-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	path := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cmd := exec.CommandContext(ctx, binary, "run", "--nats-url", bl.ns.ClientURL(), "--kustomer-base-url", bl.sb.URL,
		"--config", path, "--replica-id", id, "--rate-per-minute", strconv.Itoa(perMinute), "--admin-addr", "off",
		"--log-level", "warn", "--data-dir", filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(), "KUSTOMER_API_KEY=bench")
	cmd.Dir = dir
	if logDir != "" {
		cmd.Args = append(cmd.Args, "--log-level", "info", "--log-format", "json")
		f, err := os.Create(filepath.Join(logDir, id+".log"))
		if err != nil {
			return nil, fmt.Errorf("bench: replica %s: %w", id, err)
		}
		defer f.Close() // the child holds its own copy
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: replica %s: %w", id, err)
	}
	return &replicaProc{cmd: cmd, dir: dir}, nil
}

// peakRSS is the process's VmHWM, 0 when unknown.
func (p *replicaProc) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stop ends the process (SIGTERM: it drains) and removes its folder.
func (p *replicaProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
	_ = os.RemoveAll(p.dir)
}
