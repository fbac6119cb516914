package admin

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/net/netutil"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/loopback"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// AddrDefault is where the admin server listens unless told otherwise:
// loopback, so the dashboard needs no token on a laptop.
const AddrDefault = "127.0.0.1:9090"

// Conn is what the server needs of the NATS connection.
type Conn interface {
	IsConnected() bool
}

// Workflows reports the workflows this process runs now; nil while it has
// not started them (start-up, a reload).
type Workflows interface {
	Workflows() []replica.WorkflowState
}

// RunLog is what the dashboard reads of the run log.
type RunLog interface {
	List(ctx context.Context, f runlog.Filter) ([]runlog.Record, error)
	Get(ctx context.Context, id string) (runlog.Record, error)
}

// DeadLetters is what the dashboard needs of the dead-letter store.
type DeadLetters interface {
	List(ctx context.Context, f dlq.Filter) ([]dlq.Record, error)
	Replay(ctx context.Context, f dlq.Filter, opts dlq.ReplayOptions) (dlq.ReplayResult, error)
	Purge(ctx context.Context, f dlq.Filter) (int, error)
}

// Config configures a [Server]. Conn, JetStream and Workflows are required.
type Config struct {
	// Addr is the listen address; default AddrDefault.
	Addr string
	// Token, when set, is needed by every route but the probes and
	// /metrics. Required when Addr is not a loopback address.
	Token string

	Conn      Conn
	JetStream jetstream.JetStream
	Workflows Workflows
	// Status names the streams and bucket /status and the overview read.
	Status leads.StatusConfig
	// RunLog and DeadLetters back the dashboard; when nil they are opened
	// on first use with their default names.
	RunLog      RunLog
	DeadLetters DeadLetters
	// ReplayCheck makes the check of each replay (see
	// [dlq.ReplayOptions.Check]); default leads.ReplayCheck.
	ReplayCheck func(js jetstream.JetStream) func(context.Context, dlq.Record) error
	// CustomerURL, when set, links a customer id to its page in Kustomer.
	CustomerURL func(id string) string
	// TraceURL, when set, links a run's trace id to the tracing UI.
	TraceURL func(traceID string) string
	// Metrics serves /metrics; default promhttp.Handler().
	Metrics http.Handler
	// ProbeTimeout bounds the NATS requests of /readyz; default
	// ProbeTimeoutDefault.
	ProbeTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout bound a connection
	// reading a request's headers, reading a whole request (body included)
	// and waiting for the next request, as [http.Server]'s fields of those
	// names do; defaults ReadHeaderTimeoutDefault, ReadTimeoutDefault and
	// IdleTimeoutDefault. A client that sends slowly is disconnected.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxConns caps the connections served at once; default MaxConnsDefault.
	// Further connections wait to be accepted until one closes.
	MaxConns int
	Logger   zerolog.Logger
}

// Defaults of [Config].
const (
	// ProbeTimeoutDefault bounds the checks of one /readyz request.
	ProbeTimeoutDefault = 2 * time.Second
	// ReadHeaderTimeoutDefault bounds reading a request's headers.
	ReadHeaderTimeoutDefault = 5 * time.Second
	// ReadTimeoutDefault bounds reading a whole request: the dashboard's
	// forms are small.
	ReadTimeoutDefault = 30 * time.Second
	// IdleTimeoutDefault bounds a kept-alive connection between requests.
	IdleTimeoutDefault = 2 * time.Minute
	// MaxConnsDefault caps the connections served at once.
	MaxConnsDefault = 128
)

func (c *Config) validate() error {
	c.Addr = cmp.Or(c.Addr, AddrDefault)
	switch {
	case c.Conn == nil || c.JetStream == nil:
		return errors.New("admin: a NATS connection is required")
	case c.Workflows == nil:
		return errors.New("admin: Workflows is required")
	}
	if c.Token == "" && !loopback.Addr(c.Addr) {
		return fmt.Errorf("admin: --admin-addr %s listens beyond loopback: set an admin token (--admin-token or KSYNC_ADMIN_TOKEN), or listen on 127.0.0.1", c.Addr)
	}
	if c.ReplayCheck == nil {
		c.ReplayCheck = leads.ReplayCheck
	}
	if c.Metrics == nil {
		c.Metrics = promhttp.Handler()
	}
	if c.ProbeTimeout < 0 || c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.IdleTimeout < 0 || c.MaxConns < 0 {
		return errors.New("admin: a negative timeout or connection cap")
	}
	c.ProbeTimeout = cmp.Or(c.ProbeTimeout, ProbeTimeoutDefault)
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, ReadHeaderTimeoutDefault)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, ReadTimeoutDefault)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, IdleTimeoutDefault)
	c.MaxConns = cmp.Or(c.MaxConns, MaxConnsDefault)
	return nil
}

// Server is the admin HTTP server. Create it with New, run it with Start,
// stop it with Shutdown. Safe for concurrent use.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	err     error // Serve's, once done is closed
	csrfKey []byte
	pages   *pages
	stores  stores
}

// New validates cfg and returns a Server; nothing listens until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, done: make(chan struct{}), csrfKey: make([]byte, 32)}
	_, _ = rand.Read(s.csrfKey)
	s.stores = stores{js: cfg.JetStream, status: cfg.Status, runs: cfg.RunLog, dead: cfg.DeadLetters}
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
	}
	return s, nil
}

// Start listens on the configured address and serves in the background
// until Shutdown. It returns the listen error, naming the address.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = netutil.LimitListener(ln, s.cfg.MaxConns)
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = fmt.Errorf("admin: serve on %s: %w", ln.Addr(), err)
			s.log.Error().Err(s.err).Msg("admin server stopped")
		}
	}()
	return nil
}

// Addr is the address the server listens on (with the port chosen when the
// configured one was 0); empty before Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Done is closed when the server stopped serving, by Shutdown or on an
// error (see Err).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the server stopped serving on its own; nil while it serves and
// after Shutdown.
func (s *Server) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Shutdown stops accepting connections, waits until the requests in flight
// are answered or ctx is done (then closes them), and waits for the serving
// goroutine. It returns Serve's error, if it stopped on one.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return s.err
}

// Handler returns the server's routes, for tests and for mounting elsewhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.cfg.Metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "admin: "+path+" answers GET only", http.StatusMethodNotAllowed)
		})
	}
	private := http.NewServeMux()
	private.HandleFunc("GET /status", s.statusJSON)
	s.routeDashboard(private)
	csrf := http.NewCrossOriginProtection()
	dashboard := csrf.Handler(s.authorize(private))
	if s.cfg.Token == "" && loopback.Addr(s.cfg.Addr) {
		dashboard = s.loopbackHostsOnly(dashboard)
	}
	mux.Handle("/", dashboard)
	return mux
}

// loopbackHostsOnly refuses requests whose Host is not a loopback name or
// address, with 421. Without a token the server listens on loopback only,
// but a page on an attacker's domain that resolves to 127.0.0.1 (DNS
// rebinding) would be same-origin with it, read its pages and CSRF token,
// and post a purge; the Host it sends is its own domain's. The probes and
// /metrics are not behind it: they answer whatever the Host.
func (s *Server) loopbackHostsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopback.Host(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		addr := cmp.Or(s.Addr(), s.cfg.Addr)
		http.Error(w, fmt.Sprintf("admin: Host %q is not a loopback name or address: without an admin token the dashboard answers only "+
			"on localhost, 127.0.0.1 or [::1] (browse to http://%s/), or set --admin-token (KSYNC_ADMIN_TOKEN)", r.Host, addr),
			http.StatusMisdirectedRequest)
	})
}

// sessionCookie holds a digest of the admin token, never the token itself.
const sessionCookie = "ksync_admin"

func (s *Server) tokenDigest() string {
	sum := sha256.Sum256([]byte("kustomer-sync admin session\x00" + s.cfg.Token))
	return hex.EncodeToString(sum[:])
}

// authorize lets a request through when no token is configured, or when it
// carries the token (bearer) or the session cookie, and lets the stylesheet
// through to anyone (the login page needs it; it holds nothing of the
// deployment's); other requests get the login page (GET) or 401.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" || s.authorized(r) || r.Method == http.MethodGet && r.URL.Path == "/style.css" {
			next.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == "/login" {
			s.login(w, r)
			return
		}
		if r.Method == http.MethodGet && r.URL.Path != "/status" {
			http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="kustomer-sync admin"`)
		http.Error(w, "admin: the admin token is required (Authorization: Bearer <token>, or log in at /login)", http.StatusUnauthorized)
	})
}

// sameSecret reports whether got is want, the secret. It compares their
// SHA-256 digests in constant time, so that the time it takes tells nothing
// of want, its length included.
func sameSecret(got, want string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return compareDigests(a[:], b[:])
}

// compareDigests compares two digests in constant time; a variable so that
// a test can see what is compared.
var compareDigests = func(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func (s *Server) authorized(r *http.Request) bool {
	if auth, ok := cutPrefixFold(r.Header.Get("Authorization"), "Bearer "); ok {
		return sameSecret(auth, s.cfg.Token)
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		return sameSecret(c.Value, s.tokenDigest())
	}
	return false
}
