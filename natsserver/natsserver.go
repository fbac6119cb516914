// Package natsserver starts the NATS server with JetStream that runs inside
// this process when no --nats-url is given: the zero-setup default of `run`
// and `demo`, and the server `bench` drains against.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

const (
	// AddrDefault is where the embedded NATS server listens, so that
	// `publish`, `dlq` and `runs` find it without flags.
	AddrDefault = "127.0.0.1:4222"
	// StoreDirDefault is the JetStream store of the embedded server.
	StoreDirDefault = "data/nats"
)

// Config configures the NATS server that `run` starts when no
// --nats-url is given.
type Config struct {
	// Addr is host:port to listen on; default AddrDefault. Port 0
	// picks a free port (tests, demo).
	Addr string
	// StoreDir holds JetStream's files; default StoreDirDefault.
	StoreDir string
	// Logger receives the server's own log: warnings and errors at their
	// level, notices at debug. The zero value discards it.
	Logger zerolog.Logger
}

// Start starts a NATS server with JetStream inside this process and waits
// until it accepts connections. The caller shuts it down with Shutdown and
// WaitForShutdown, after the worker has drained.
func Start(cfg Config) (*server.Server, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = AddrDefault
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("natsserver: embedded NATS address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("natsserver: embedded NATS port %q: %w", portText, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else if ln, err := net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("natsserver: embedded NATS cannot listen on %s (is another NATS server running there? point --nats-url at it instead): %w", addr, err)
	} else {
		ln.Close()
	}
	storeDir := cfg.StoreDir
	if storeDir == "" {
		storeDir = StoreDirDefault
	}
	opts := &server.Options{
		ServerName: "kustomer-sync-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoLog:      true, // no plain-text logger of its own: see Logger
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsserver: embedded NATS: %w", err)
	}
	if cfg.Logger.GetLevel() != zerolog.Disabled {
		s.SetLoggerV2(serverLogger{cfg.Logger.With().Str("component", "nats-server").Logger()}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("natsserver: embedded NATS did not become ready within 10s")
	}
	return s, nil
}

// serverLogger is the embedded server's logger (server.Logger) on zerolog, so
// its lines are structured like ours instead of plain text on stderr.
type serverLogger struct{ log zerolog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
