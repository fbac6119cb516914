// Package kustomertest helps test code that talks to Kustomer: [New] starts a
// sandbox Kustomer on loopback for one test, and [RunContract] is the
// behaviour suite that the sandbox and a real Kustomer account must both pass.
package kustomertest

import (
	"net/http/httptest"
	"testing"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

// Server is a sandbox Kustomer served over loopback HTTP.
type Server struct {
	URL     string // base URL, for kustomer.Config.BaseURL
	Sandbox *sandbox.Sandbox
}

// New starts a sandbox for cfg; it is closed when the test ends (simulated
// timeouts are released first, so closing never waits for them). It fails the
// test on an invalid cfg.
func New(t testing.TB, cfg sandbox.Config) *Server {
	t.Helper()
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatalf("kustomertest: %v", err)
	}
	hs := httptest.NewServer(sb)
	t.Cleanup(func() {
		sb.Close()
		hs.Close()
	})
	return &Server{URL: hs.URL, Sandbox: sb}
}

// Client returns a client for the sandbox: cfg with BaseURL set to s.URL and,
// when cfg.APIKey is empty, a placeholder key (the sandbox only checks keys
// when its Config.APIKey is set).
func (s *Server) Client(t testing.TB, cfg kustomer.Config) *kustomer.Client {
	t.Helper()
	cfg.BaseURL = s.URL
	if cfg.APIKey == "" {
		cfg.APIKey = "kustomertest-key"
	}
	c, err := kustomer.New(cfg)
	if err != nil {
		t.Fatalf("kustomertest: %v", err)
	}
	return c
}
