// Package bench holds the benchmarks of `kustomer-sync bench`, each against
// an embedded NATS server and a Kustomer sandbox in this process:
//
//   - [Run], rate fidelity: worker replicas (package worker), each with its
//     own NATS connection, limiter and share of the budget, drain a backlog
//     of lead events against a sandbox that enforces a budget per window,
//     optionally beside a foreign client of the same organisation that
//     spends part of it without adapting. It reports, per window, what the
//     workers created and the 429s they got.
//   - [RunMode], bulk against per-item mode: a backlog of single-lead events
//     drained in one mode under a budget, with bulk jobs taking a while; it
//     reports the time, customers per budget unit, 429s and duplicates.
//   - [RunPipeline], the pipeline's own cost: the same backlog drained with
//     no budget and no latency by a bare fetch-POST-ack loop (the floor), or
//     in either mode; it reports customers per second and the process's CPU
//     per customer.
package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// Defaults of [Config].
const (
	RateDefault     = 600
	WindowDefault   = time.Minute
	WindowsDefault  = 2
	ReplicasDefault = 1
	LatencyDefault  = 20 * time.Millisecond
)

// Config is one benchmark scenario. Zero fields take their defaults.
type Config struct {
	// Rate is the organisation's budget R that the sandbox enforces, per
	// Window; default RateDefault.
	Rate int
	// Window is the sandbox's rate-limit window (Kustomer's: a minute);
	// default WindowDefault. The workers' budget per minute is scaled to
	// it, so a short window benches as a minute would.
	Window time.Duration
	// Windows is how many windows are measured; default WindowsDefault.
	// With a foreign client one more runs first: the one the workers learn
	// in.
	Windows int
	// Replicas is how many workers share the budget; default ReplicasDefault.
	Replicas int
	// Foreign is the share of the budget a foreign client spends at an even
	// pace, in [0, 1).
	Foreign float64
	// Latency is added to every sandbox request; default LatencyDefault.
	Latency time.Duration
	// NATSOptions are used for every connection (e.g. to log disconnects).
	NATSOptions []nats.Option
	// Logger receives the workers' warnings and errors.
	Logger zerolog.Logger
}

func (c Config) withDefaults() (Config, error) {
	c.Rate = cmp.Or(c.Rate, RateDefault)
	c.Window = cmp.Or(c.Window, WindowDefault)
	c.Windows = cmp.Or(c.Windows, WindowsDefault)
	c.Replicas = cmp.Or(c.Replicas, ReplicasDefault)
	c.Latency = cmp.Or(c.Latency, LatencyDefault)
	switch {
	case c.Rate < 1, c.Windows < 1, c.Replicas < 1, c.Window <= 0, c.Latency < 0:
		return c, errors.New("bench: config: Rate, Windows, Replicas and Window must be positive, Latency not negative")
	case c.Foreign < 0 || c.Foreign >= 1:
		return c, fmt.Errorf("bench: config: Foreign %v: want a share in [0, 1)", c.Foreign)
	}
	return c, nil
}

// Measured is how many windows Run measures.
func (c Config) Measured() int {
	c, _ = c.withDefaults()
	if c.Foreign > 0 {
		return c.Windows + 1 // the first window is the one the workers learn in
	}
	return c.Windows
}

// Window is what happened in one measured window.
type Window struct {
	Created        int // customers the workers created
	ForeignCreated int // customers the foreign client created
	Throttled      int // 429s the workers got
}

// Report is the outcome of one scenario.
type Report struct {
	Config  Config // with its defaults
	Windows []Window
	// ForeignRequests and ForeignThrottled count the foreign client's
	// requests and the 429s among them.
	ForeignRequests, ForeignThrottled int64
	// Requests and Throttled are the sandbox's counts, in all.
	Requests, Throttled int
}

// foreignPrefix names the foreign client's customers, to count them apart.
const foreignPrefix = "Foreign client "

// Run runs one scenario: an embedded NATS server in a temporary folder, the
// sandbox, cfg.Replicas workers and a backlog larger than the budget, for
// cfg.Measured() windows. Everything it started is stopped when it returns.
func Run(ctx context.Context, cfg Config) (_ Report, err error) {
	if cfg, err = cfg.withDefaults(); err != nil {
		return Report{}, err
	}
	rep := Report{Config: cfg}
	bl, err := startBacklog(ctx, sandbox.Config{RatePerMinute: cfg.Rate, Window: cfg.Window, Latency: cfg.Latency}, cfg.NATSOptions, cfg.Logger)
	if err != nil {
		return rep, err
	}
	start := time.Now() // the sandbox's windows are aligned to its creation
	defer func() { err = errors.Join(err, bl.close(ctx)) }()
	sb := bl.sb

	measured := cfg.Measured()
	// Scale the budget to the window so a 10s window benches as 60s would.
	perMinute := int(float64(cfg.Rate) * float64(time.Minute) / float64(cfg.Window))
	throttled := make([]atomic.Int64, measured+1)
	windowOf := func(t time.Time) int { return min(int(t.Sub(start)/cfg.Window), measured) }
	workflows := mapping.DefaultConfig().Workflows
	for i := range cfg.Replicas {
		stop, err := startReplica(ctx, bl.ns.ClientURL(), cfg, worker.Config{
			Workflows: workflows,
			Kustomer: kustomer.Config{BaseURL: sb.URL, APIKey: "bench", OnResponse: func(rl kustomer.RateLimit) {
				if rl.Status == http.StatusTooManyRequests {
					throttled[windowOf(time.Now())].Add(1)
				}
			}},
			RatePerMinute: perMinute,
			ReplicaID:     fmt.Sprintf("bench-%d", i),
			Logger:        cfg.Logger.Level(max(cfg.Logger.GetLevel(), zerolog.WarnLevel)),
		})
		if err != nil {
			return rep, err
		}
		defer stop()
	}

	// The workers created the stream; the backlog is larger than the budget.
	total := cfg.Rate*(cfg.Windows+1) + cfg.Rate/2
	if err := bl.publish(ctx, total, time.Minute, func(i int) []byte {
		return fmt.Appendf(nil, `{"name":"Lead %d","emails":"lead%d@example.com"}`, i, i)
	}); err != nil {
		return rep, err
	}

	var foreignCount, foreignThrottled atomic.Int64
	fctx, stopForeign := context.WithCancel(ctx)
	defer stopForeign()
	var fwg sync.WaitGroup
	if cfg.Foreign > 0 {
		fwg.Go(func() {
			runForeignClient(fctx, sb.URL, cfg.Foreign*float64(perMinute), &foreignCount, &foreignThrottled)
		})
	}
	end := start.Add(time.Duration(measured) * cfg.Window)
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
	}
	stopForeign()
	fwg.Wait()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}

	rep.Windows = make([]Window, measured)
	for _, c := range sb.Customers() {
		w := int(c.CreatedAt.Sub(start) / cfg.Window)
		if w < 0 || w >= measured {
			continue
		}
		if name, _ := c.Attributes["name"].(string); strings.HasPrefix(name, foreignPrefix) {
			rep.Windows[w].ForeignCreated++
		} else {
			rep.Windows[w].Created++
		}
	}
	for w := range rep.Windows {
		rep.Windows[w].Throttled = int(throttled[w].Load())
	}
	rep.ForeignRequests, rep.ForeignThrottled = foreignCount.Load(), foreignThrottled.Load()
	st := sb.Stats()
	rep.Requests, rep.Throttled = st.Requests, st.RateLimited
	return rep, nil
}

// startReplica runs one worker with its own connection, as a separate
// process would, and returns what stops it.
func startReplica(ctx context.Context, natsURL string, bc Config, cfg worker.Config) (func(), error) {
	nc, err := nats.Connect(natsURL, append(bc.NATSOptions, nats.Name(cfg.ReplicaID))...)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cfg.Conn = nc
	w, err := worker.New(cfg)
	if err == nil {
		err = w.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = w.Stop(stopCtx) // the backlog is left behind on purpose
		nc.Close()
	}, nil
}

// runForeignClient spends perMinute requests per minute at an even pace, as
// another integration of the same Kustomer org would, without adapting.
func runForeignClient(ctx context.Context, url string, perMinute float64, count, limited *atomic.Int64) {
	tick := time.NewTicker(time.Duration(float64(time.Minute) / perMinute))
	defer tick.Stop()
	body := strings.NewReader("")
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("%s%d", foreignPrefix, i)})
		body.Reset(string(b))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/customers", body)
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		count.Add(1)
		if resp.StatusCode == http.StatusTooManyRequests {
			limited.Add(1)
		}
	}
}
