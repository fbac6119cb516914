package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/loopback"
	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// ingestFlags are `run`'s settings of HTTP ingest (off by default).
type ingestFlags struct {
	addr       string
	token      string
	secretFile string
	maxBytes   byteSize
}

func (f *ingestFlags) register(fl *pflag.FlagSet) {
	f.maxBytes = ingest.MaxBodyBytesDefault
	fl.StringVar(&f.addr, "ingest-addr", "", "serve HTTP ingest (POST /v1/events/{workflow}) on this address, e.g. 127.0.0.1:8080; off when empty. Beyond loopback it needs --ingest-token")
	fl.StringVar(&f.token, "ingest-token", "", "bearer token HTTP ingest requires (Authorization: Bearer <token>); required when --ingest-addr is not loopback")
	fl.StringVar(&f.secretFile, "ingest-hmac-secret-file", "", "file holding a shared secret: HTTP ingest then requires X-Signature: sha256=<hex HMAC-SHA256 of the body>")
	fl.Var(&f.maxBytes, "ingest-max-bytes", "largest HTTP ingest request body, e.g. 4MB; larger ones get 413")
	markSecret(fl, "ingest-token")
	for name, key := range map[string]string{
		"ingest-addr": "KSYNC_INGEST_ADDR", "ingest-token": "KSYNC_INGEST_TOKEN",
		"ingest-hmac-secret-file": "KSYNC_INGEST_HMAC_SECRET_FILE", "ingest-max-bytes": "KSYNC_INGEST_MAX_BYTES",
	} {
		bindEnv(fl, name, key)
	}
}

// check refuses an ingest address beyond loopback without a token.
func (f *ingestFlags) check(cmd *cobra.Command) error {
	if f.addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(f.addr); err != nil {
		return flagError(cmd, "ingest-addr", "want host:port, e.g. 127.0.0.1:8080")
	}
	if f.token == "" && !loopback.Addr(f.addr) {
		return flagError(cmd, "ingest-token", "required when HTTP ingest listens beyond loopback (--ingest-addr %s): anyone who reaches it could publish events", f.addr)
	}
	if f.maxBytes <= 0 {
		return flagError(cmd, "ingest-max-bytes", "want a size above 0, e.g. 4MB")
	}
	return nil
}

// ingestServer is HTTP ingest as `run` serves it. Its Serve goroutine is
// owned by it: shutdown waits for it.
type ingestServer struct {
	srv       *http.Server
	ln        net.Listener
	done      chan struct{}
	workflows atomic.Pointer[[]*mapping.Workflow] // swapped on reload
}

// startIngest serves HTTP ingest for st's workflows when --ingest-addr is set.
func (st *stack) startIngest(a *app, f *ingestFlags) error {
	if f.addr == "" {
		return nil
	}
	var secret []byte
	if f.secretFile != "" {
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return usageError{fmt.Errorf("--ingest-hmac-secret-file: %w", err)}
		}
		if secret = []byte(strings.TrimSpace(string(b))); len(secret) == 0 {
			return usageError{fmt.Errorf("--ingest-hmac-secret-file %s is empty", f.secretFile)}
		}
	}
	is := &ingestServer{done: make(chan struct{})}
	is.workflows.Store(&st.config.Workflows)
	h, err := ingest.NewHandler(ingest.HandlerConfig{
		JS:         st.js,
		Subjects:   is.subject,
		Workflows:  is.names,
		Token:      f.token,
		HMACSecret: secret,
		MaxBytes:   int64(f.maxBytes),
		Logger:     a.log.With().Str("component", "ingest").Logger(),

		TracerProvider: st.tracing.TracerProvider(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("--ingest-addr: %w", err)
	}
	is.ln = ln
	is.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	go func() {
		defer close(is.done)
		if err := is.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("HTTP ingest stopped")
		}
	}()
	st.ingest = is
	a.log.Info().Str("addr", ln.Addr().String()).Bool("token", f.token != "").Bool("signature", secret != nil).Msg("HTTP ingest on POST /v1/events/{workflow}")
	return nil
}

// subject is the subject filter of the workflow named.
func (is *ingestServer) subject(name string) (string, bool) {
	for _, wf := range *is.workflows.Load() {
		if wf.Name == name {
			return wf.Subject, true
		}
	}
	return "", false
}

// names lists the configured workflows, for the 404 of one that is not.
func (is *ingestServer) names() []string {
	var names []string
	for _, wf := range *is.workflows.Load() {
		names = append(names, wf.Name)
	}
	return names
}

// shutdown stops accepting requests and lets those in flight finish within
// ctx, then waits for the Serve goroutine.
func (is *ingestServer) shutdown(ctx context.Context) error {
	err := is.srv.Shutdown(ctx)
	if err != nil {
		_ = is.srv.Close()
	}
	<-is.done
	return err
}
