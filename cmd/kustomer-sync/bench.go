package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

func init() { extraCommands = append(extraCommands, (*app).benchCommand) }

type benchFlags struct {
	rate     int
	windows  int
	window   time.Duration
	replicas []int
	foreign  float64
	latency  time.Duration
}

func (a *app) benchCommand() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure rate fidelity: achieved rate and 429s against a sandbox enforcing a budget",
		Long: `Start an embedded NATS server and a Kustomer sandbox that enforces a budget of --rate requests
per --window, then run worker replicas (in this process, each with its own connection, limiter
and share of the budget) against a backlog of lead events for --windows windows. It reports,
per window, the customers created as a share of the budget and the 429s the workers got.

With --foreign 0.3 another client of the same org spends 30% of the budget at an even pace,
so the workers must adapt to x-ratelimit-remaining; the first window is the one they learn in.`,
		Example: `  kustomer-sync bench                                  # 1 and 3 replicas, then 1 replica + 30% foreign
  kustomer-sync bench --replicas 3 --windows 2 --rate 600`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			scenarios := []benchScenario{}
			if cmd.Flags().Changed("replicas") || cmd.Flags().Changed("foreign") {
				for _, n := range f.replicas {
					scenarios = append(scenarios, benchScenario{replicas: n, foreign: f.foreign})
				}
			} else {
				scenarios = []benchScenario{{replicas: 1}, {replicas: 3}, {replicas: 1, foreign: 0.3}}
			}
			for _, sc := range scenarios {
				if err := a.bench(cmd.Context(), f, sc); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.rate, "rate", 600, "the org budget R the sandbox enforces, per window")
	fl.IntVar(&f.windows, "windows", 2, "windows to measure (each --window long)")
	fl.DurationVar(&f.window, "window", time.Minute, "the sandbox's rate-limit window (Kustomer: 60s)")
	fl.IntSliceVar(&f.replicas, "replicas", []int{1}, "worker replicas sharing the budget (a list runs one scenario each)")
	fl.Float64Var(&f.foreign, "foreign", 0, "share of the budget a foreign client spends on the same org")
	fl.DurationVar(&f.latency, "latency", 20*time.Millisecond, "sandbox latency per request")
	return cmd
}

type benchScenario struct {
	replicas int
	foreign  float64
}

func (a *app) bench(ctx context.Context, f benchFlags, sc benchScenario) error {
	dir, err := os.MkdirTemp("", "kustomer-sync-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns, err := worker.StartEmbedded(worker.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		return err
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()

	sb, err := sandbox.New(sandbox.Config{RatePerMinute: f.rate, Window: f.window, Latency: f.latency})
	if err != nil {
		return err
	}
	start := time.Now() // the sandbox's windows are aligned to its creation
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sb, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	defer sb.Close()
	sbURL := "http://" + ln.Addr().String()

	a.useOwnServer()
	nc, js, err := a.connectTo(ctx, ns.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()

	// Scale the budget to the window so --window 10s benches like 60s would.
	perMinute := int(float64(f.rate) * float64(time.Minute) / float64(f.window))
	var ours429 [64]atomic.Int64
	windowOf := func(t time.Time) int { return min(int(t.Sub(start)/f.window), len(ours429)-1) }
	cfg := mapping.DefaultConfig()
	var stops []func()
	for i := range sc.replicas {
		stop, err := startBenchReplica(ctx, ns.ClientURL(), sbURL, perMinute, fmt.Sprintf("bench-%d", i), cfg, a.log, func(rl kustomer.RateLimit) {
			if rl.Status == http.StatusTooManyRequests {
				ours429[windowOf(time.Now())].Add(1)
			}
		})
		if err != nil {
			return err
		}
		stops = append(stops, stop)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()

	total := f.rate*(f.windows+1) + f.rate/2
	recs := make([]ingest.Event, total)
	for i := range recs {
		recs[i] = ingest.Event{Line: i + 1, ID: fmt.Sprintf("bench-%d", i), Data: fmt.Appendf(nil, `{"name":"Lead %d","emails":"lead%d@example.com"}`, i, i)}
	}
	if _, err := (ingest.Publisher{JS: js, Timeout: time.Minute}).Publish(ctx, "leads.bench", recs); err != nil {
		return err
	}

	var foreignCount, foreign429 atomic.Int64
	fctx, stopForeign := context.WithCancel(ctx)
	defer stopForeign()
	var fwg sync.WaitGroup
	if sc.foreign > 0 {
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			runForeignClient(fctx, sbURL, sc.foreign*float64(perMinute), &foreignCount, &foreign429)
		}()
	}

	measured := f.windows
	if sc.foreign > 0 {
		measured++ // the first window is the one the workers learn in
	}
	fmt.Fprintf(a.stdout, "\nbench: budget %d per %s, %d replica(s), foreign client %.0f%% — running %d window(s) ...\n",
		f.rate, f.window, sc.replicas, sc.foreign*100, measured)
	end := start.Add(time.Duration(measured) * f.window)
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
		return ctx.Err()
	}
	stopForeign()
	fwg.Wait()

	ours, theirs := make([]int, measured), make([]int, measured)
	for _, c := range sb.Customers() {
		w := int(c.CreatedAt.Sub(start) / f.window)
		if w < 0 || w >= measured {
			continue
		}
		if name, _ := c.Attributes["name"].(string); strings.HasPrefix(name, foreignPrefix) {
			theirs[w]++
		} else {
			ours[w]++
		}
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "window\tworkers created\tof budget\tforeign created\tbudget used\tworker 429s\t")
	for w := range measured {
		fmt.Fprintf(tw, "%d\t%d\t%.1f%%\t%d\t%.1f%%\t%d\t\n", w+1, ours[w], 100*float64(ours[w])/float64(f.rate),
			theirs[w], 100*float64(ours[w]+theirs[w])/float64(f.rate), ours429[w].Load())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if sc.foreign > 0 {
		fmt.Fprintf(a.stdout, "foreign client: %d requests, %d of them 429 (it does not adapt)\n", foreignCount.Load(), foreign429.Load())
	}
	fmt.Fprintf(a.stdout, "sandbox: %d requests, %d 429s in all\n", sb.Stats().Requests, sb.Stats().RateLimited)
	return nil
}

// startBenchReplica runs one worker replica with its own connection, as a
// separate process would.
func startBenchReplica(ctx context.Context, natsURL, sbURL string, perMinute int, id string, cfg *mapping.Config, log zerolog.Logger, observe func(kustomer.RateLimit)) (func(), error) {
	nc, err := nats.Connect(natsURL, append(natsLogOptions(log), nats.Name(id))...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	r, err := startReplica(ctx, nc, js, replicaConfig{
		kustomer:  kustomer.Config{BaseURL: sbURL, APIKey: "bench", OnResponse: observe},
		perMinute: perMinute,
		worker:    worker.Config{Workflows: cfg.Workflows, ReplicaID: id, Logger: log.Level(zerolog.WarnLevel)},
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.stop(stopCtx, log)
		nc.Close()
	}, nil
}

// foreignPrefix names the foreign client's customers, to count them apart.
const foreignPrefix = "Foreign client "

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
