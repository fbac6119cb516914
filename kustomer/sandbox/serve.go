package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// ShutdownTimeoutDefault bounds the graceful shutdown of [ListenAndServe].
const ShutdownTimeoutDefault = 5 * time.Second

// ListenAndServe serves a new sandbox for cfg on addr until ctx is done, then
// shuts down gracefully: simulated timeouts are released (503), in-flight
// requests get up to ShutdownTimeoutDefault to finish. It returns nil after a
// shutdown caused by ctx, or the error that stopped it. Requests are logged at
// debug level, without headers.
func ListenAndServe(ctx context.Context, addr string, cfg Config, log zerolog.Logger) error {
	sb, err := New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sandbox: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           logRequests(sb, log),
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info().Str("addr", ln.Addr().String()).Int("rate_per_minute", sb.limit).
		Bool("auth", cfg.APIKey != "").Msg("sandbox listening")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("sandbox: serve: %w", err)
	case <-ctx.Done():
	}
	sb.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeoutDefault)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sandbox: serve: %w", err)
	}
	if shutdownErr != nil {
		_ = srv.Close()
		return fmt.Errorf("sandbox: shutdown: %w", shutdownErr)
	}
	st := sb.Stats()
	log.Info().Int("requests", st.Requests).Int("creates", st.Creates).Int("duplicates", st.Duplicates).
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

func logRequests(h http.Handler, log zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if log.GetLevel() > zerolog.DebugLevel {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", rec.status).
			Dur("took", time.Since(start)).Msg("sandbox request")
	})
}
