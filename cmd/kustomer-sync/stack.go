package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loopback"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natsserver"
	"github.com/kustomer-sync/kustomer-sync/tracing"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// workerFlags are the settings of a worker process, shared by `run` and `demo`.
type workerFlags struct {
	configPath    string
	apiKeyFile    string
	baseURL       string
	timeout       time.Duration
	useSandbox    bool
	sandboxRate   int
	ratePerMinute int
	rateBurst     int
	dataDir       string
	embeddedAddr  string
	stream        string
	replicas      int
	metricsAddr   string // the old name of adminAddr
	adminAddr     string
	// adminAddrGiven: --admin-addr (or its old name, or their variables)
	// was set, so a taken address is fatal rather than skipped.
	adminAddrGiven bool
	adminToken     string
	ingest         ingestFlags
	kustomerOrg    string
	traceURL       string // --trace-url-template
	replicaID      string
	drainTimeout   time.Duration
	maxEventBytes  byteSize
	ackWait        time.Duration
	dedupWindow    time.Duration
	maxAge         time.Duration
	maxBytes       byteSize
	claimLease     time.Duration
	sandboxFaults  sandbox.Faults
	sandboxKey     string
	// sandboxJobModel, with --sandbox: the job model of sandbox.JobModels.
	sandboxJobModel string
	startup         time.Duration
}

func (f *workerFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.configPath, "config", "c", "", "workflow config file (YAML); default: the built-in workflow on leads.>")
	fl.StringVar(&f.apiKeyFile, "kustomer-api-key-file", "", "file holding the Kustomer API key (or set KUSTOMER_API_KEY)")
	fl.StringVar(&f.baseURL, "kustomer-base-url", "", "Kustomer API base URL, or a region (us, eu, in) or org name (default https://api.kustomerapp.com)")
	fl.DurationVar(&f.timeout, "kustomer-timeout", kustomer.DefaultTimeout, "timeout of one Kustomer request")
	fl.BoolVar(&f.useSandbox, "sandbox", false, "run against a local Kustomer sandbox started in this process (no account needed)")
	fl.IntVar(&f.sandboxRate, "sandbox-rate", 1000, "with --sandbox: the sandbox's org budget, requests per minute")
	fl.Float64Var(&f.sandboxFaults.ErrorRate, "sandbox-error-rate", 0, "with --sandbox: share of requests answered 503")
	fl.Float64Var(&f.sandboxFaults.TimeoutRate, "sandbox-timeout-rate", 0, "with --sandbox: share of creates stored but never answered")
	fl.DurationVar(&f.sandboxFaults.Latency, "sandbox-latency", 0, "with --sandbox: latency added to every request")
	fl.DurationVar(&f.sandboxFaults.BulkDelay, "sandbox-bulk-delay", 0, "with --sandbox: how long a bulk job takes (with --sandbox-job-model spread: the longest)")
	fl.StringVar(&f.sandboxJobModel, "sandbox-job-model", "", "with --sandbox: how bulk jobs behave, one of "+strings.Join(sandbox.JobModels, ", ")+" (see `kustomer-sync sandbox --help`)")
	fl.IntVar(&f.ratePerMinute, "rate-per-minute", 1000, "Kustomer org budget shared by ALL replicas, requests per minute")
	fl.IntVar(&f.rateBurst, "rate-burst", 0, "token-bucket burst (default: per-minute/20)")
	fl.StringVar(&f.dataDir, "data-dir", "data", "where the embedded NATS server keeps its store")
	fl.StringVar(&f.embeddedAddr, "embedded-addr", natsserver.AddrDefault, "address of the embedded NATS server, used when no --nats-url is given")
	fl.StringVar(&f.stream, "stream", leads.StreamDefault, "JetStream stream of lead events")
	fl.IntVar(&f.replicas, "stream-replicas", 1, "replicas of the streams and buckets this program creates (3 on a cluster)")
	fl.StringVar(&f.adminAddr, "admin-addr", admin.AddrDefault, "serve the admin server (/metrics, /healthz, /readyz, /status and the dashboard) on this address; \"off\" for none. Beyond loopback it needs --admin-token")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "old name of --admin-addr")
	fl.StringVar(&f.adminToken, "admin-token", "", "token the admin server's dashboard and /status ask for (Authorization: Bearer, or the login page); required when --admin-addr is not loopback")
	fl.StringVar(&f.kustomerOrg, "kustomer-org", "", "your Kustomer org name, to link customer ids on the dashboard to https://<org>.kustomerapp.com (default: from an org-style --kustomer-base-url)")
	fl.StringVar(&f.traceURL, "trace-url-template", "", "link a run's trace id on the dashboard to your tracing UI: an http(s) URL holding {trace_id}, e.g. https://jaeger.example/trace/{trace_id} (traces are on when OTEL_EXPORTER_OTLP_ENDPOINT is set)")
	markSecret(fl, "admin-token")
	f.ingest.register(fl)
	fl.StringVar(&f.replicaID, "replica-id", "", "name of this replica, unique in the deployment: it owns claims in the ledger and a share of the budget (default host-pid)")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 30*time.Second, "on SIGINT or SIGTERM, and before a SIGHUP reload, how long in-flight events may take to finish")
	f.maxEventBytes = worker.MaxEventBytesDefault
	fl.Var(&f.maxEventBytes, "max-event-bytes", "largest event, e.g. 1MB or 512KiB; larger events are dead-lettered as invalid_event")
	fl.DurationVar(&f.ackWait, "ack-wait", worker.AckWaitDefault, "JetStream ack wait; the worker heartbeats long events within it")
	fl.DurationVar(&f.claimLease, "claim-lease", ledger.LeaseDefault, "how long a replica's claim on an item outlives the replica if it dies mid-request; must exceed --kustomer-timeout")
	fl.DurationVar(&f.dedupWindow, "dedup-window", leads.DedupWindowDefault, "how long the stream remembers Nats-Msg-Id for de-duplication")
	fl.DurationVar(&f.maxAge, "stream-max-age", leads.StreamMaxAgeDefault, "when kustomer-sync manages the leads stream: how long it keeps an event, processed or not (an event still unprocessed then is lost); 0 keeps events forever")
	fl.DurationVar(&f.startup, "startup-timeout", worker.StartupTimeoutDefault, "how long start-up waits for NATS to be reachable and JetStream to create the streams, buckets and consumers (a cluster still forming) before giving up")
	fl.Var(&f.maxBytes, "stream-max-bytes", "when kustomer-sync manages the leads stream: its largest size, e.g. 10GB; when full it refuses new events (publishers get an error) instead of dropping unprocessed ones; 0 is no limit")
	for name, key := range map[string]string{
		"config": "KSYNC_CONFIG", "kustomer-api-key-file": "KUSTOMER_API_KEY_FILE", "kustomer-base-url": "KUSTOMER_BASE_URL",
		"kustomer-timeout": "KSYNC_KUSTOMER_TIMEOUT", "rate-per-minute": "KSYNC_RATE_PER_MINUTE", "rate-burst": "KSYNC_RATE_BURST",
		"data-dir": "KSYNC_DATA_DIR", "embedded-addr": "KSYNC_EMBEDDED_ADDR", "stream": "KSYNC_STREAM",
		"stream-replicas": "KSYNC_STREAM_REPLICAS", "metrics-addr": "KSYNC_METRICS_ADDR", "admin-addr": "KSYNC_ADMIN_ADDR",
		"admin-token": "KSYNC_ADMIN_TOKEN", "kustomer-org": "KSYNC_KUSTOMER_ORG", "replica-id": "KSYNC_REPLICA_ID",
		"drain-timeout": "KSYNC_DRAIN_TIMEOUT", "max-event-bytes": "KSYNC_MAX_EVENT_BYTES", "ack-wait": "KSYNC_ACK_WAIT",
		"claim-lease": "KSYNC_CLAIM_LEASE", "dedup-window": "KSYNC_DEDUP_WINDOW",
		"stream-max-age": "KSYNC_STREAM_MAX_AGE", "stream-max-bytes": "KSYNC_STREAM_MAX_BYTES",
		"startup-timeout": "KSYNC_STARTUP_TIMEOUT", "trace-url-template": "KSYNC_TRACE_URL_TEMPLATE",
	} {
		bindEnv(fl, name, key)
	}
}

// check refuses values the worker cannot run with, naming the flag or its
// variable. Call it from RunE, after the flags and the environment are read.
func (f *workerFlags) check(cmd *cobra.Command) error {
	return checkFlags(cmd,
		atLeast("rate-per-minute", 1), atLeast("rate-burst", 0),
		between("stream-replicas", 1, 5),
		positiveDuration("kustomer-timeout"), positiveDuration("drain-timeout"), positiveDuration("ack-wait"),
		positiveDuration("claim-lease"), positiveDuration("dedup-window"), positiveDuration("startup-timeout"),
		share("sandbox-error-rate"), share("sandbox-timeout-rate"),
		notNegative("sandbox-bulk-delay"), oneOf("sandbox-job-model", sandbox.JobModels),
		f.checkAdmin,
		f.ingest.check,
		func(cmd *cobra.Command) error {
			if f.useSandbox && f.baseURL != "" {
				return flagError(cmd, "kustomer-base-url", "cannot be used with --sandbox, which serves its own Kustomer: drop one of them")
			}
			return nil
		},
		func(cmd *cobra.Command) error {
			if f.maxEventBytes < 1 || int64(f.maxEventBytes) > math.MaxInt32 {
				return flagError(cmd, "max-event-bytes", "want a size from 1 byte to 2GiB, such as 1MB")
			}
			return nil
		},
		func(cmd *cobra.Command) error {
			if err := checkTraceURL(f.traceURL); err != nil {
				return flagError(cmd, "trace-url-template", "%v", err)
			}
			return nil
		},
		func(cmd *cobra.Command) error {
			if f.maxAge < 0 {
				return flagError(cmd, "stream-max-age", "want a duration such as 168h, or 0 to keep events forever")
			}
			return nil
		},
		func(cmd *cobra.Command) error {
			if f.claimLease <= f.timeout {
				return flagError(cmd, "claim-lease", "must exceed --kustomer-timeout %s, or a slow request's item could be claimed and created by another replica", f.timeout)
			}
			return nil
		},
	)
}

// checkAdmin settles the admin address (--metrics-addr is its old name) and
// refuses one beyond loopback without a token.
func (f *workerFlags) checkAdmin(cmd *cobra.Command) error {
	// Whichever is more explicit wins: the command line over the
	// environment, the new name over the old at the same level.
	source := func(name, key string) int {
		fl := cmd.Flags().Lookup(name)
		switch {
		case !fl.Changed:
			return 0
		case os.Getenv(key) != "" && os.Getenv(key) == fl.Value.String():
			return 1 // from the environment (or the same value on both)
		}
		return 2
	}
	if f.metricsAddr != "" && source("metrics-addr", "KSYNC_METRICS_ADDR") > source("admin-addr", "KSYNC_ADMIN_ADDR") {
		f.adminAddr = f.metricsAddr
	}
	f.adminAddrGiven = source("admin-addr", "KSYNC_ADMIN_ADDR") > 0 || source("metrics-addr", "KSYNC_METRICS_ADDR") > 0
	if f.adminAddr == "off" {
		f.adminAddr = ""
	}
	if f.adminAddr != "" && f.adminToken == "" && !loopback.Addr(f.adminAddr) {
		return flagError(cmd, "admin-token", "required when the admin server listens beyond loopback (--admin-addr %s): its dashboard can retry and purge dead letters", f.adminAddr)
	}
	return nil
}

// customerURL links a customer id to its page in the Kustomer app, when the
// org is known; nil otherwise.
func (f *workerFlags) customerURL() func(id string) string {
	org := f.kustomerOrg
	if org == "" {
		if u, err := url.Parse(f.baseURL); err == nil {
			org, _ = strings.CutSuffix(u.Hostname(), ".api.kustomerapp.com")
			if org == u.Hostname() || strings.Contains(org, ".") {
				org = ""
			}
		}
	}
	if org == "" {
		return nil
	}
	return func(id string) string {
		return "https://" + url.PathEscape(org) + ".kustomerapp.com/app/customers/" + url.PathEscape(id)
	}
}

// streamConfig is the leads stream as the flags describe it.
func (f *workerFlags) streamConfig() leads.StreamConfig {
	maxAge := f.maxAge
	if maxAge == 0 {
		maxAge = -1 // the flag's 0 is the worker's "no limit"
	}
	return leads.StreamConfig{Name: f.stream, Replicas: f.replicas, DedupWindow: f.dedupWindow, MaxAge: maxAge, MaxBytes: int64(f.maxBytes)}
}

// stack is a running worker and whatever it started to run: the embedded NATS
// server, the sandbox and the admin server when asked for.
type stack struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	natsURL  string
	embedded *server.Server
	sandbox  *sandbox.Server
	worker   *worker.Worker
	admin    *admin.Server
	ingest   *ingestServer
	registry *prometheus.Registry
	config   *mapping.Config
	tracing  *tracing.Provider

	sandboxFile  string        // where the sandbox's customers are kept, with the embedded NATS store
	sandboxSaved int           // the sandbox's Version when last saved
	sandboxStop  chan struct{} // closed to stop saveSandbox
	sandboxDone  chan struct{} // closed when saveSandbox has returned
}

// sandboxSaveInterval is how often `run --sandbox` saves the sandbox's
// customers when they changed (and once more at shutdown).
const sandboxSaveInterval = time.Second

// saveSandbox saves the sandbox's customers to sandboxFile every
// sandboxSaveInterval when they changed, until sandboxStop is closed.
func (st *stack) saveSandbox(a *app) {
	defer close(st.sandboxDone)
	t := time.NewTicker(sandboxSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-st.sandboxStop:
			return
		case <-t.C:
			st.saveSandboxNow(a)
		}
	}
}

func (st *stack) saveSandboxNow(a *app) {
	v := st.sandbox.Version()
	if v == st.sandboxSaved {
		return
	}
	if err := st.sandbox.SaveFile(st.sandboxFile); err != nil {
		a.log.Warn().Err(err).Msg("cannot keep the sandbox's customers")
		return
	}
	st.sandboxSaved = v
}

// startStack starts everything `run` needs. On error it stops what it started.
func (a *app) startStack(ctx context.Context, f *workerFlags) (_ *stack, err error) {
	st := &stack{registry: newRegistry()}
	defer func() {
		if err != nil {
			st.stop(context.Background(), a)
		}
	}()

	if f.configPath != "" {
		st.config, err = mapping.Load(f.configPath)
		if err != nil {
			return nil, err
		}
	} else {
		st.config = mapping.DefaultConfig()
	}

	if st.tracing, err = tracing.FromEnv(ctx, os.Getenv, version); err != nil {
		return nil, usageError{err}
	}
	if st.tracing.Enabled() {
		a.log.Info().Msg("OpenTelemetry traces on: exported by OTLP as the OTEL_* variables say")
	}

	apiKey, err := resolveAPIKey(f.apiKeyFile)
	if err != nil {
		return nil, err
	}
	baseURL := f.baseURL
	switch {
	case f.useSandbox:
		sb := sandbox.Config{RatePerMinute: f.sandboxRate, APIKey: f.sandboxKey}
		if st.sandbox, err = sandbox.Start("127.0.0.1:0", sb, a.log); err != nil {
			return nil, err
		}
		faults := f.sandboxFaults
		if f.sandboxJobModel != "" {
			_ = faults.SetJobModel(f.sandboxJobModel) // checked with the flags
		}
		st.sandbox.SetFaults(faults)
		baseURL = st.sandbox.URL
		apiKey = cmp.Or(apiKey, cmp.Or(f.sandboxKey, "sandbox"))
		if a.natsURL == "" {
			// The ledger lives in the embedded NATS store in --data-dir: the
			// customers it points at are kept there too, or a restart would
			// find them gone.
			st.sandboxFile = filepath.Join(f.dataDir, "sandbox", "customers.json")
			n, err := st.sandbox.LoadFile(st.sandboxFile)
			if err != nil {
				return nil, err
			}
			st.sandboxSaved = st.sandbox.Version()
			st.sandboxDone = make(chan struct{})
			st.sandboxStop = make(chan struct{})
			go st.saveSandbox(a)
			a.log.Info().Str("url", st.sandbox.URL).Int("rate_per_minute", f.sandboxRate).Int("customers", n).
				Str("store", st.sandboxFile).Msg("Kustomer sandbox started")
		} else {
			a.log.Warn().Str("url", st.sandbox.URL).Int("rate_per_minute", f.sandboxRate).
				Msg("Kustomer sandbox started in memory: with --nats-url the ledger outlives it, so after a restart the ledger names customers this sandbox no longer has (already_created, nothing sent); use the embedded NATS server (no --nats-url) to keep both in --data-dir")
		}
	case apiKey == "":
		return nil, usageError{errors.New("no Kustomer API key: set KUSTOMER_API_KEY or --kustomer-api-key-file to use a real account, or pass --sandbox to run against a local Kustomer sandbox")}
	case baseURL != "":
		if baseURL, err = kustomer.BaseURLFor(baseURL); err != nil {
			return nil, usageError{fmt.Errorf("--kustomer-base-url: %w", err)}
		}
	}
	// Said before anything else happens, so a wrong host is plain to see
	// next to the start probe's verdict.
	a.log.Info().Str("kustomer_base_url", redactURL(cmp.Or(baseURL, kustomer.DefaultBaseURL))).Msg("Kustomer API")

	st.natsURL = a.natsURL
	if st.natsURL == "" {
		st.embedded, err = natsserver.Start(natsserver.Config{Addr: f.embeddedAddr, StoreDir: filepath.Join(f.dataDir, "nats"), Logger: a.log})
		if err != nil {
			return nil, err
		}
		st.natsURL = st.embedded.ClientURL()
		a.log.Info().Str("url", st.natsURL).Str("store", filepath.Join(f.dataDir, "nats")).Msg("embedded NATS server started")
	}
	startBy := time.Now().Add(f.startup)
	st.nc, st.js, err = a.dial(ctx, st.natsURL, f.startup)
	if err != nil {
		return nil, err
	}

	st.worker, err = worker.New(worker.Config{
		Conn:           st.nc,
		JetStream:      st.js,
		Workflows:      st.config.Workflows,
		Kustomer:       kustomer.Config{BaseURL: baseURL, APIKey: apiKey, Timeout: f.timeout},
		RatePerMinute:  f.ratePerMinute,
		RateBurst:      f.rateBurst,
		Stream:         f.streamConfig(),
		AckWait:        f.ackWait,
		Ledger:         ledger.Config{Lease: f.claimLease},
		MaxEventBytes:  int(f.maxEventBytes),
		ReplicaID:      f.replicaID,
		DrainTimeout:   f.drainTimeout,
		StartupTimeout: max(time.Until(startBy), time.Second),
		Logger:         a.log,
		Registerer:     st.registry,
		TracerProvider: st.tracing.TracerProvider(),
	})
	if err != nil {
		return nil, err
	}
	// The admin server listens before the workflows start: its probes and
	// metrics answer through a long start-up (/readyz says the workflows
	// have not started), and whoever sees this replica's workflows running
	// can read its metrics.
	if f.adminAddr != "" {
		if err := st.startAdmin(a, f); err != nil {
			return nil, err
		}
	}
	if err := st.worker.Start(ctx); err != nil {
		st.worker = nil
		return nil, err
	}
	if err := st.startIngest(a, &f.ingest); err != nil {
		return nil, err
	}
	return st, nil
}

// startAdmin starts the admin server: metrics, probes, status and the
// dashboard of this replica.
func (st *stack) startAdmin(a *app, f *workerFlags) error {
	srv, err := admin.New(admin.Config{
		Addr:        f.adminAddr,
		Token:       f.adminToken,
		Conn:        st.nc,
		JetStream:   st.js,
		Workflows:   st.worker,
		Metrics:     promhttp.HandlerFor(st.registry, promhttp.HandlerOpts{Registry: st.registry}),
		Status:      leads.StatusConfig{Stream: f.stream},
		CustomerURL: f.customerURL(),
		TraceURL:    traceURL(f.traceURL),
		Logger:      a.log,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		if !f.adminAddrGiven && errors.Is(err, syscall.EADDRINUSE) {
			// Another replica on this host holds the default address: this
			// one runs without an admin server rather than not at all.
			a.log.Warn().Str("addr", f.adminAddr).Msg("the default admin address is taken (another replica on this host?): this replica runs without an admin server; give it --admin-addr to have one")
			return nil
		}
		return fmt.Errorf("--admin-addr: %w", err)
	}
	st.admin = srv
	st.worker.SetAdminAddr(srv.Addr())
	a.log.Info().Str("addr", srv.Addr()).Bool("token", f.adminToken != "").Msg("admin server: dashboard on /, /metrics, /healthz, /readyz, /status")
	return nil
}

// adminFailed is closed if the admin server stops serving on its own.
func (st *stack) adminFailed() <-chan struct{} {
	if st.admin == nil {
		return nil
	}
	return st.admin.Done()
}

// newRegistry holds one process's metrics: the worker's, the reloads, the
// build's, and Go's and the process's own.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// stop drains the worker within ctx, then closes everything in reverse order.
func (st *stack) stop(ctx context.Context, a *app) {
	if st.ingest != nil {
		// Stopped first: a request answered 202 was stored, one cut short
		// gets no answer and is retried by its sender.
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := st.ingest.shutdown(ictx); err != nil {
			a.log.Warn().Err(err).Msg("HTTP ingest")
		}
		cancel()
	}
	if st.admin != nil {
		// Stopped first: a draining replica answers no probe, so it is seen
		// as gone.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if err := st.admin.Shutdown(actx); err != nil {
			a.log.Warn().Err(err).Msg("admin server")
		}
		cancel()
	}
	if st.worker != nil {
		_ = st.worker.Stop(ctx) // the worker logs a drain deadline passed, before "worker stopped"
	}
	if st.tracing.Enabled() {
		// The drained worker's last spans, and none left behind.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := st.tracing.Shutdown(tctx); err != nil {
			a.log.Warn().Err(err).Msg("traces")
		}
		cancel()
	}
	if st.nc != nil {
		_ = st.nc.Drain()
	}
	if st.embedded != nil {
		st.embedded.Shutdown()
		st.embedded.WaitForShutdown()
	}
	if st.sandboxStop != nil {
		close(st.sandboxStop)
		<-st.sandboxDone
		st.sandboxStop = nil
		st.saveSandboxNow(a)
	}
	if st.sandbox != nil {
		// A moment of its own, even when the drain used up ctx.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sandbox.ShutdownTimeoutDefault)
		if err := st.sandbox.Shutdown(sctx); err != nil {
			a.log.Warn().Err(err).Msg("Kustomer sandbox")
		}
		cancel()
	}
}

// resolveAPIKey reads the key from the file when given, else KUSTOMER_API_KEY.
func resolveAPIKey(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usageError{fmt.Errorf("--kustomer-api-key-file: %w", err)}
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return "", usageError{fmt.Errorf("--kustomer-api-key-file %s is empty", file)}
		}
		return key, nil
	}
	return strings.TrimSpace(os.Getenv("KUSTOMER_API_KEY")), nil
}
