package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultNATSURL is where commands other than `run` look for NATS when neither
// --nats-url nor NATS_URL is given: the embedded server that `run` starts.
const defaultNATSURL = "nats://127.0.0.1:4222"

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// app holds what every subcommand shares: standard streams, global flags and
// the logger built from them.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	natsURL      string
	natsCreds    string
	natsCA       string
	natsCert     string
	natsKey      string
	natsContext  string
	natsUser     string
	natsPassword string
	natsNkey     string
	logFormat    string
	logLevel     string

	// nats holds what the NATS context (--context) adds beyond the flags.
	nats natsExtras

	log zerolog.Logger
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		return tidyError(err)
	}
	return nil
}

// ourPackages are the prefixes our packages give their errors.
var ourPackages = []string{"dlq", "ingest", "kustomer", "loop", "mapping", "outcome", "overflow", "replica", "runlog", "sandbox", "scan", "subject", "worker"}

// tidyError drops a package prefix that the message already said, as in
// "dlq: entry 5: dlq: not found" (a package's error wrapped by its own
// package): the user reads each prefix once. The chain is kept (errors.Is/As).
func tidyError(err error) error {
	msg := err.Error()
	parts := strings.Split(msg, ": ")
	seen := map[string]bool{}
	kept := parts[:0]
	for _, p := range parts {
		if slices.Contains(ourPackages, p) {
			if seen[p] {
				continue
			}
			seen[p] = true
		}
		kept = append(kept, p)
	}
	if len(kept) == len(parts) {
		return err
	}
	return tidiedError{msg: strings.Join(kept, ": "), err: err}
}

type tidiedError struct {
	msg string
	err error
}

func (e tidiedError) Error() string { return e.msg }
func (e tidiedError) Unwrap() error { return e.err }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "kustomer-sync",
		Short: "Turn lead events on NATS JetStream into Kustomer customers",
		Long: `kustomer-sync consumes lead events from a NATS JetStream stream, maps them to Kustomer
customers with templates, and creates them under one shared rate budget, with retries,
dead letters, replay and a run log.

Start with 'kustomer-sync demo': embedded NATS, a local Kustomer sandbox and the worker,
no account needed.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// A subcommand must not define its own PersistentPreRunE: cobra would
		// skip this one, and with it the environment and the logger.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := a.setupLogger(cmd); err != nil {
				return err
			}
			return a.applyNATSContext(cmd)
		},
	}
	root.SetFlagErrorFunc(flagParseError)
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats-url", "", "NATS server URL(s), comma-separated")
	pf.StringVar(&a.natsContext, "context", "", "NATS context to connect with, as the nats CLI's: a name in ~/.config/nats/context, or a .json file; flags and their variables override its settings")
	pf.StringVar(&a.natsCreds, "nats-creds", "", "NATS credentials file")
	pf.StringVar(&a.natsUser, "nats-user", "", "NATS user name (with --nats-password)")
	pf.StringVar(&a.natsPassword, "nats-password", "", "NATS password; prefer the variable, flags show in ps")
	pf.StringVar(&a.natsNkey, "nats-nkey", "", "file holding a NATS user's nkey seed")
	pf.StringVar(&a.natsCA, "nats-ca", "", "CA certificate to verify NATS servers' TLS; tls:// URLs use the system's roots otherwise")
	pf.StringVar(&a.natsCert, "nats-cert", "", "client certificate for NATS mutual TLS (with --nats-key)")
	pf.StringVar(&a.natsKey, "nats-key", "", "client key for NATS mutual TLS")
	pf.StringVar(&a.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	pf.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	markSecret(pf, "nats-password")
	for name, key := range map[string]string{
		"nats-url": "NATS_URL", "context": "NATS_CONTEXT", "nats-creds": "NATS_CREDS",
		"nats-user": "NATS_USER", "nats-password": "NATS_PASSWORD", "nats-nkey": "NATS_NKEY",
		"nats-ca": "NATS_CA", "nats-cert": "NATS_CERT", "nats-key": "NATS_KEY",
		"log-format": "KSYNC_LOG_FORMAT", "log-level": "KSYNC_LOG_LEVEL",
	} {
		bindEnv(pf, name, key)
	}

	root.AddCommand(
		a.runCommand(),
		a.publishCommand(),
		a.dlqCommand(),
		a.runsCommand(),
		a.statusCommand(),
		a.validateCommand(),
		a.mapCommand(),
		a.sandboxCommand(),
		a.demoCommand(),
		a.benchCommand(),
		a.healthcheckCommand(),
		a.versionCommand(),
	)
	refuseUnknownCommands(root)
	return root
}

// refuseUnknownCommands makes wrong arguments usage errors (exit 2) that show
// the usage line, and makes every command group (root, dlq, runs, ...) print
// its help when called alone and refuse an unknown subcommand, where cobra
// would print the help and exit 0.
func refuseUnknownCommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownCommands(sub)
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageError{fmt.Errorf("%w (usage: %s)", err, c.UseLine())}
			}
			return nil
		}
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(": did you mean %q?", s[0])
		}
		return usageError{fmt.Errorf("%s (see '%s --help')", msg, cmd.CommandPath())}
	}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(a.stdout, "kustomer-sync", version)
			return err
		},
	}
}

func (a *app) setupLogger(cmd *cobra.Command) error {
	level, err := zerolog.ParseLevel(strings.ToLower(a.logLevel))
	if err != nil || a.logLevel == "" {
		return flagError(cmd, "log-level", "want debug, info, warn or error")
	}
	var w io.Writer = a.stderr
	switch a.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: a.stderr, TimeFormat: time.TimeOnly}
	case "auto", "":
		if isTerminal(a.stderr) {
			w = zerolog.ConsoleWriter{Out: a.stderr, TimeFormat: time.TimeOnly}
		}
	default:
		return flagError(cmd, "log-format", "want json, console or auto")
	}
	// Goroutines log at once (the sandbox's requests, the worker's events):
	// the writer run was given need not be safe for concurrent use.
	a.log = zerolog.New(zerolog.SyncWriter(w)).Level(level).With().Timestamp().Logger()
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// connect dials NATS at --nats-url (or the embedded server's default address)
// and returns the connection with its JetStream context. The caller closes nc.
func (a *app) connect(ctx context.Context) (*nats.Conn, jetstream.JetStream, error) {
	url := a.natsURL
	if url == "" {
		url = defaultNATSURL
	}
	return a.connectTo(ctx, url)
}

// natsLogOptions send a NATS connection's asynchronous errors and connection
// events to log, where nats.go would print plain text on stderr.
func natsLogOptions(log zerolog.Logger) []nats.Option {
	return []nats.Option{
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS client error")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("NATS connection lost; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", redactURL(nc.ConnectedUrlRedacted())).Msg("NATS reconnected")
		}),
	}
}

// missingStream turns JetStream's "stream not found" (err_code=10059) for a
// stream the worker creates into what to do about it; other errors pass.
func (a *app) missingStream(err error, stream, what string) error {
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return fmt.Errorf("%s: there is no stream %s on the NATS server at %s. Start 'kustomer-sync run' first (it creates it), or point --nats-url, NATS_URL or --context at the worker's NATS",
		what, stream, redactURL(cmp.Or(a.natsURL, defaultNATSURL)))
}

func (a *app) connectTo(ctx context.Context, url string) (*nats.Conn, jetstream.JetStream, error) {
	return a.dial(ctx, url, 0)
}

// dial connects to NATS at url. With wait > 0 a server not reachable yet
// (starting, or a cluster still forming) is retried for up to wait.
func (a *app) dial(ctx context.Context, url string, wait time.Duration) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := a.natsOptions()
	if err != nil {
		return nil, nil, err
	}
	if wait > 0 {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(url, opts...)
	if err == nil && wait > 0 {
		if err = awaitConnected(ctx, nc, wait); err != nil {
			nc.Close()
		}
	}
	if err != nil {
		if bad := redactURLError(err); bad != err {
			return nil, nil, usageError{fmt.Errorf("connect to NATS at %s: %w", redactURL(url), bad)}
		}
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w (start one with 'kustomer-sync run --sandbox', or set --nats-url / NATS_URL)", redactURL(url), err)
	}
	var js jetstream.JetStream
	switch {
	case a.nats.jsDomain != "":
		js, err = jetstream.NewWithDomain(nc, a.nats.jsDomain)
	case a.nats.jsAPIPrefix != "":
		js, err = jetstream.NewWithAPIPrefix(nc, a.nats.jsAPIPrefix)
	default:
		js, err = jetstream.New(nc)
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// awaitConnected waits until nc, made with nats.RetryOnFailedConnect, has
// connected, for up to wait; the error says why it has not.
func awaitConnected(ctx context.Context, nc *nats.Conn, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			why := cmp.Or(nc.LastError(), nats.ErrNoServers)
			return fmt.Errorf("not reachable within the start-up timeout %s (--startup-timeout): %w", wait, why)
		}
	}
	return nil
}

// natsOptions are the connection options from the flags (and the context).
func (a *app) natsOptions() ([]nats.Option, error) {
	opts := append(natsLogOptions(a.log),
		nats.Name("kustomer-sync"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
	)
	if a.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(a.natsCreds))
	}
	if (a.natsUser == "") != (a.natsPassword == "") {
		return nil, usageError{errors.New("--nats-user and --nats-password (NATS_USER, NATS_PASSWORD) go together")}
	}
	if a.natsUser != "" {
		opts = append(opts, nats.UserInfo(a.natsUser, a.natsPassword))
	}
	if a.nats.token != "" {
		opts = append(opts, nats.Token(a.nats.token))
	}
	if a.natsNkey != "" {
		opt, err := nats.NkeyOptionFromSeed(a.natsNkey)
		if err != nil {
			return nil, usageError{fmt.Errorf("--nats-nkey %s: %w", a.natsNkey, err)}
		}
		opts = append(opts, opt)
	}
	if a.natsCA != "" {
		opts = append(opts, nats.RootCAs(a.natsCA))
	}
	if (a.natsCert == "") != (a.natsKey == "") {
		return nil, usageError{errors.New("--nats-cert and --nats-key go together")}
	}
	if a.natsCert != "" {
		opts = append(opts, nats.ClientCert(a.natsCert, a.natsKey))
	}
	if a.nats.tlsFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if a.nats.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.nats.inboxPrefix))
	}
	return opts, nil
}
