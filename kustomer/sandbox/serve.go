package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// ShutdownTimeoutDefault bounds the graceful shutdown of [ListenAndServe].
const ShutdownTimeoutDefault = 5 * time.Second

// ListenAndServe serves a new sandbox for cfg on addr until ctx is done, then
// shuts down gracefully: simulated timeouts are released (503), in-flight
// requests get up to ShutdownTimeoutDefault to finish. It returns nil after a
// shutdown caused by ctx, or the error that stopped it. Requests are logged at
// info level, without headers; GET ListPath lists the customers.
func ListenAndServe(ctx context.Context, addr string, cfg Config, log zerolog.Logger) error {
	s, err := start(addr, cfg, log, zerolog.InfoLevel)
	if err != nil {
		return err
	}
	log.Info().Str("addr", strings.TrimPrefix(s.URL, "http://")).Int("rate_per_minute", s.limit).
		Bool("auth", cfg.APIKey != "").Str("customers", s.URL+ListPath).Msg("sandbox listening")
	select {
	case <-ctx.Done():
	case err := <-s.served:
		s.served <- err // for Shutdown
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeoutDefault)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return err
	}
	st := s.Stats()
	log.Info().Int("customers", len(s.Customers())).Int("requests", st.Requests).Int("creates", st.Creates).Int("duplicates", st.Duplicates).
		Int("updates", st.Updates).Int("lookups", st.Lookups).Int("bulk_jobs", st.BulkJobs).
		Int("rate_limited", st.RateLimited).Msg("sandbox stopped")
	return nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// logRequests logs each request at level: method, path, status and how
// long it took in ms; never a header (the API key) nor a body.
func logRequests(h http.Handler, log zerolog.Logger, level zerolog.Level) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if log.GetLevel() > level {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		log.WithLevel(level).Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).
			Float64("took_ms", float64(time.Since(start).Microseconds())/1000).Msg("sandbox request")
	})
}

// Server is a sandbox served over loopback HTTP by this process, beside a
// worker or a benchmark. Its serving goroutine is owned: Shutdown waits for
// it and returns the error that ended it.
type Server struct {
	*Sandbox
	URL string // base URL, for kustomer.Config.BaseURL

	srv    *http.Server
	served chan error
}

// Start serves a new sandbox for cfg on addr ("127.0.0.1:0" picks a port)
// until Shutdown. An error that ends serving early is logged at once.
//
// Requests are logged at debug: beside a worker, the worker's own log says
// what it sent.
func Start(addr string, cfg Config, log zerolog.Logger) (*Server, error) {
	return start(addr, cfg, log, zerolog.DebugLevel)
}

func start(addr string, cfg Config, log zerolog.Logger, requests zerolog.Level) (*Server, error) {
	sb, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sandbox: listen: %w", err)
	}
	s := &Server{
		Sandbox: sb,
		URL:     "http://" + ln.Addr().String(),
		srv:     &http.Server{Handler: logRequests(withList(sb, sb), log, requests), ReadHeaderTimeout: 10 * time.Second},
		served:  make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("sandbox stopped serving")
		}
		s.served <- err
	}()
	return s, nil
}

// Shutdown releases simulated timeouts (503), lets in-flight requests finish
// until ctx ends, and waits for the serving goroutine. It returns the error
// that ended serving, if not the shutdown itself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Sandbox.Close()
	shutdownErr := s.srv.Shutdown(ctx)
	if shutdownErr != nil {
		_ = s.srv.Close()
	}
	if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sandbox: serve: %w", err)
	}
	if shutdownErr != nil {
		return fmt.Errorf("sandbox: shutdown: %w", shutdownErr)
	}
	return nil
}
