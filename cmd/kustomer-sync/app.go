package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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

	natsURL   string
	natsCreds string
	natsCA    string
	natsCert  string
	natsKey   string
	logFormat string
	logLevel  string

	log zerolog.Logger
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

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
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setupLogger()
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.natsURL, "nats-url", os.Getenv("NATS_URL"), "NATS server URL(s), comma-separated (env NATS_URL)")
	pf.StringVar(&a.natsCreds, "nats-creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	pf.StringVar(&a.natsCA, "nats-ca", os.Getenv("NATS_CA"), "CA certificate to verify NATS servers' TLS (env NATS_CA); tls:// URLs use the system's roots otherwise")
	pf.StringVar(&a.natsCert, "nats-cert", os.Getenv("NATS_CERT"), "client certificate for NATS mutual TLS (env NATS_CERT; with --nats-key)")
	pf.StringVar(&a.natsKey, "nats-key", os.Getenv("NATS_KEY"), "client key for NATS mutual TLS (env NATS_KEY)")
	pf.StringVar(&a.logFormat, "log-format", cmp.Or(os.Getenv("KSYNC_LOG_FORMAT"), "auto"), "log format: json, console, or auto (console on a terminal) (env KSYNC_LOG_FORMAT)")
	pf.StringVar(&a.logLevel, "log-level", cmp.Or(os.Getenv("KSYNC_LOG_LEVEL"), "info"), "log level: debug, info, warn, error (env KSYNC_LOG_LEVEL)")

	root.AddCommand(
		a.runCommand(),
		a.publishCommand(),
		a.sandboxCommand(),
		a.demoCommand(),
		a.versionCommand(),
	)
	for _, extra := range extraCommands {
		root.AddCommand(extra(a))
	}
	return root
}

// extraCommands are registered by the files that define them (init), so each
// command group lives in its own file.
var extraCommands []func(*app) *cobra.Command

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

func (a *app) setupLogger() error {
	level, err := zerolog.ParseLevel(strings.ToLower(a.logLevel))
	if err != nil || a.logLevel == "" {
		return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", a.logLevel)}
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
		return usageError{fmt.Errorf("--log-format %q: want json, console or auto", a.logFormat)}
	}
	a.log = zerolog.New(w).Level(level).With().Timestamp().Logger()
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

func (a *app) connectTo(ctx context.Context, url string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name("kustomer-sync"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
	}
	if a.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(a.natsCreds))
	}
	if a.natsCA != "" {
		opts = append(opts, nats.RootCAs(a.natsCA))
	}
	if (a.natsCert == "") != (a.natsKey == "") {
		return nil, nil, usageError{errors.New("--nats-cert and --nats-key go together")}
	}
	if a.natsCert != "" {
		opts = append(opts, nats.ClientCert(a.natsCert, a.natsKey))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w (start one with 'kustomer-sync run --sandbox', or set --nats-url / NATS_URL)", redactURL(url), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// redactURL hides passwords and tokens in a NATS URL before it is printed.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[redacted]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
