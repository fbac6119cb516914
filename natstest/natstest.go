// Package natstest starts real NATS servers with JetStream inside a test
// process. NATS is never mocked in this project: every test that touches
// JetStream talks to one of these.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an embedded NATS server with JetStream, stopped when the test ends.
type Server struct {
	*server.Server
	StoreDir string
}

// Start runs a NATS server with JetStream on a random loopback port, its store
// in a temporary folder. Pass a non-empty storeDir to reuse a store (restart).
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, t.TempDir(), -1)
}

// StartWith runs a server on port (-1 for random) with its store in storeDir,
// so a test can stop a server and start another on the same store and port.
func StartWith(t testing.TB, storeDir string, port int) *Server {
	t.Helper()
	return StartOpts(t, storeDir, port, nil)
}

// StartOpts is StartWith with a last look at the server's options, e.g. to
// raise MaxPayload for a test of oversized events.
func StartOpts(t testing.TB, storeDir string, port int, adjust func(*server.Options)) *Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	}
	if adjust != nil {
		adjust(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("natstest: server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s, StoreDir: storeDir}
}

// Connect returns a connection and a JetStream context to s, closed when the
// test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return connect(t, s.ClientURL())
}

// StartWithStream runs a server (as Start does) on which stream cfg
// already exists, as an operator would have created it before the test,
// and connects to it; it answers the server, the JetStream context and the
// stream.
func StartWithStream(t testing.TB, cfg jetstream.StreamConfig) (*Server, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	s := Start(t)
	_, js := s.Connect(t)
	st, err := js.CreateStream(context.Background(), cfg)
	if err != nil {
		t.Fatalf("natstest: create stream %s: %v", cfg.Name, err)
	}
	return s, js, st
}

// connect returns a connection to url with opts and a JetStream context,
// closed when the test ends.
func connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}
