// Package sandbox is a faithful local Kustomer: an [net/http.Handler] that
// serves the endpoints kustomer-sync uses, with Kustomer's closed create schema,
// its two error shapes, its per-window rate limit and headers, and injectable
// faults (503s, outages, latency, creates that are stored but never answered).
//
// It keeps every customer in memory and counts what happened ([Sandbox.Stats],
// [Sandbox.CountByExternalID]) so tests and benchmarks can prove that nothing
// was lost and nothing was created twice. Like Kustomer, it accepts a second
// customer with an externalId that already exists; it counts it as a duplicate.
//
// Endpoints: POST /v1/customers, GET /v1/customers/{id},
// GET /v1/customers/externalId={id} (also email= and phone=),
// POST /v1/customers/bulk, GET /v1/bulk/{id}, GET /v1/bulk/{id}/batches.
package sandbox

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

const (
	// RatePerMinuteDefault is the org budget per window (Kustomer Enterprise).
	RatePerMinuteDefault = 1000
	// WindowDefault is the length of one rate-limit window.
	WindowDefault = 60 * time.Second
	// TimeoutHangDefault is how long a simulated timeout holds a request when
	// the client does not give up first.
	TimeoutHangDefault = 30 * time.Second

	defaultSeed = 1
	maxBodySize = 16 << 20
)

// Config configures a [Sandbox]. The zero Config is a fault-free Kustomer with
// a budget of [RatePerMinuteDefault] requests per minute and no auth check.
type Config struct {
	// RatePerMinute is the org budget per window; 0 means
	// RatePerMinuteDefault; negative means unlimited (no rate headers either).
	RatePerMinute int
	// Window is the rate-limit window; default WindowDefault. Windows are
	// fixed and aligned to the sandbox's start.
	Window time.Duration
	// APIKey, when set, makes requests without "Authorization: Bearer <APIKey>"
	// get 401.
	APIKey string
	// Latency is added to every request.
	Latency time.Duration
	// ErrorRate is the share of requests answered 503 before anything else
	// happens (no rate unit spent, nothing stored).
	ErrorRate float64
	// TimeoutRate is the share of single creates that are stored and then not
	// answered until the client gives up, or TimeoutHang passes (then 504).
	TimeoutRate float64
	// TimeoutHang bounds a simulated timeout; default TimeoutHangDefault.
	TimeoutHang time.Duration
	// Outage makes every request 503 while true.
	Outage bool
	// Seed drives the fault dice; 0 means a fixed default seed, so runs are
	// reproducible.
	Seed int64
	// Now is the clock for rate windows and timestamps; default time.Now.
	Now func() time.Time
}

func (c Config) validate() error {
	switch {
	case c.Window < 0:
		return fmt.Errorf("sandbox: config: negative Window %s", c.Window)
	case c.TimeoutHang < 0:
		return fmt.Errorf("sandbox: config: negative TimeoutHang %s", c.TimeoutHang)
	}
	return c.faults().validate()
}

func (c Config) faults() Faults {
	return Faults{Latency: c.Latency, ErrorRate: c.ErrorRate, TimeoutRate: c.TimeoutRate, Outage: c.Outage}
}

// Faults are the failures the sandbox injects; change them at runtime with
// [Sandbox.SetFaults].
type Faults struct {
	Latency     time.Duration // added to every request
	ErrorRate   float64       // share of requests answered 503, in [0, 1]
	TimeoutRate float64       // share of creates stored but not answered, in [0, 1]
	Outage      bool          // every request 503
}

func (f Faults) validate() error {
	switch {
	case f.Latency < 0:
		return fmt.Errorf("sandbox: negative Latency %s", f.Latency)
	case !(f.ErrorRate >= 0 && f.ErrorRate <= 1):
		return fmt.Errorf("sandbox: ErrorRate %v is outside [0, 1]", f.ErrorRate)
	case !(f.TimeoutRate >= 0 && f.TimeoutRate <= 1):
		return fmt.Errorf("sandbox: TimeoutRate %v is outside [0, 1]", f.TimeoutRate)
	}
	return nil
}

// Customer is a customer the sandbox created.
type Customer struct {
	ID         string
	CreatedAt  time.Time
	Attributes map[string]any // as answered in data.attributes
}

// Stats counts what the sandbox saw since it started.
type Stats struct {
	Requests     int // every request received
	Creates      int // customers stored (single creates, bulk items, and creates whose answer was withheld)
	Lookups      int // customer look-ups answered 200 or 404
	RateLimited  int // 429s
	ServerErrors int // injected 503s (ErrorRate, Outage)
	Timeouts     int // creates stored but not answered (TimeoutRate)
	BadRequests  int // 400s
	Unauthorized int // 401s
	Duplicates   int // creates whose externalId already existed
}

// Sandbox is an in-memory Kustomer. It is safe for concurrent use; its zero
// value is not usable: call [New].
type Sandbox struct {
	limit       int // per window; <0 unlimited
	window      time.Duration
	apiKey      string
	timeoutHang time.Duration
	now         func() time.Time
	start       time.Time
	closed      chan struct{}
	closeOnce   sync.Once

	mu        sync.Mutex
	faults    Faults
	rng       *rand.Rand
	idBase    uint64
	idSeq     uint64
	windowIdx int64
	used      int
	stats     Stats
	customers []record
	byID      map[string]int
	byExt     map[string][]int
	byEmail   map[string]int
	byPhone   map[string]int
	bulks     map[string]*bulkJob
}

type record struct {
	id        string
	createdAt time.Time
	data      []byte // the JSON of {"type","id","attributes","links"}
}

// New returns a Sandbox whose rate windows start now.
func New(cfg Config) (*Sandbox, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	limit := cmp.Or(cfg.RatePerMinute, RatePerMinuteDefault)
	seed := uint64(cmp.Or(cfg.Seed, defaultSeed))
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return &Sandbox{
		limit:       limit,
		window:      cmp.Or(cfg.Window, WindowDefault),
		apiKey:      cfg.APIKey,
		timeoutHang: cmp.Or(cfg.TimeoutHang, TimeoutHangDefault),
		now:         now,
		start:       now(),
		closed:      make(chan struct{}),
		faults:      cfg.faults(),
		rng:         rng,
		idBase:      rng.Uint64(),
		byID:        make(map[string]int),
		byExt:       make(map[string][]int),
		byEmail:     make(map[string]int),
		byPhone:     make(map[string]int),
		bulks:       make(map[string]*bulkJob),
	}, nil
}

// SetFaults replaces the injected faults; requests already past the fault
// checks are not affected. It panics on an invalid Faults (negative latency,
// a rate outside [0, 1]): that is a bug in the test.
func (s *Sandbox) SetFaults(f Faults) {
	if err := f.validate(); err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// Faults returns the faults in force.
func (s *Sandbox) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Close ends every simulated timeout now (its request gets 503), and makes
// later ones answer 503 at once, so an http.Server over the sandbox can shut
// down without waiting TimeoutHang. The sandbox keeps serving otherwise.
func (s *Sandbox) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// Customers returns a copy of every created customer, in creation order.
func (s *Sandbox) Customers() []Customer {
	s.mu.Lock()
	recs := slicesClone(s.customers)
	s.mu.Unlock()
	out := make([]Customer, len(recs))
	for i, r := range recs {
		var d struct {
			Attributes map[string]any `json:"attributes"`
		}
		_ = json.Unmarshal(r.data, &d) // written by us; cannot fail
		out[i] = Customer{ID: r.id, CreatedAt: r.createdAt, Attributes: d.Attributes}
	}
	return out
}

// Stats returns the counters so far.
func (s *Sandbox) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// CountByExternalID returns how many customers carry each externalId;
// customers without one are not counted. A count above 1 is a duplicate.
func (s *Sandbox) CountByExternalID() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.byExt))
	for k, v := range s.byExt {
		out[k] = len(v)
	}
	return out
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

// ServeHTTP answers one request as Kustomer would: injected faults first, then
// the rate limit (every request spends a unit), then auth, then the route.
func (s *Sandbox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.Requests++
	f := s.faults
	s.mu.Unlock()

	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone; nobody reads an answer
		}
	}

	s.mu.Lock()
	f = s.faults
	inject := f.Outage || (f.ErrorRate > 0 && s.rng.Float64() < f.ErrorRate)
	if inject {
		s.stats.ServerErrors++
	}
	rl := s.spend(!inject)
	if rl.over {
		s.stats.RateLimited++
	}
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	rl.setHeaders(w.Header())
	if inject {
		writeSimpleError(w, http.StatusServiceUnavailable, "serviceUnavailable", "Service Unavailable")
		return
	}
	if rl.over {
		w.Header().Set("Retry-After", strconv.Itoa(rl.retryAfterSeconds()))
		writeSimpleError(w, http.StatusTooManyRequests, "rateLimited", "Too many requests: the organization's rate limit is exhausted until the window resets")
		return
	}
	if s.apiKey != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+s.apiKey)) != 1 {
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeSimpleError(w, http.StatusUnauthorized, "unauthorized", "Unauthorized: missing or invalid API key")
		return
	}
	s.route(w, r)
}

func (s *Sandbox) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// rateState is the rate window as one response reports it.
type rateState struct {
	unlimited bool
	limit     int
	remaining int
	reset     time.Time
	now       time.Time
	over      bool
}

// spend charges one unit of the current window when charge is set. Callers
// hold s.mu.
func (s *Sandbox) spend(charge bool) rateState {
	if s.limit < 0 {
		return rateState{unlimited: true}
	}
	now := s.now()
	idx := max(int64(now.Sub(s.start)/s.window), 0)
	if idx != s.windowIdx {
		s.windowIdx, s.used = idx, 0
	}
	st := rateState{limit: s.limit, now: now, reset: s.start.Add(time.Duration(idx+1) * s.window)}
	if charge {
		if s.used >= s.limit {
			st.over = true
		} else {
			s.used++
		}
	}
	st.remaining = s.limit - s.used
	return st
}

func (st rateState) setHeaders(h http.Header) {
	if st.unlimited {
		return
	}
	h.Set("X-Ratelimit-Limit", strconv.Itoa(st.limit))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(st.remaining))
	// Rounded up, so a client that waits until this second is never early.
	reset := st.reset.Unix()
	if st.reset.Nanosecond() > 0 {
		reset++
	}
	h.Set("X-Ratelimit-Reset", strconv.FormatInt(reset, 10))
}

func (st rateState) retryAfterSeconds() int {
	d := st.reset.Sub(st.now)
	secs := int((d + time.Second - 1) / time.Second)
	return max(secs, 1)
}

// newID returns a fresh 24-hex-digit id, like Kustomer's. Callers hold s.mu.
func (s *Sandbox) newID() string {
	s.idSeq++
	return fmt.Sprintf("%08x%016x", uint32(s.start.Unix()), s.idBase+s.idSeq)
}

// writeSimpleError writes Kustomer's first error shape:
// {"errors":[{"code","message"}]}.
func writeSimpleError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "message": message}}})
}

// writeAPIError writes the JSON:API error shape.
func writeAPIError(w http.ResponseWriter, status int, code, title string, vs []violation) {
	var errs []map[string]any
	for _, v := range vs {
		e := map[string]any{"status": status, "code": code, "title": v.Title}
		if v.Detail != "" {
			e["detail"] = v.Detail
		}
		if v.Pointer != "" {
			e["source"] = map[string]string{"pointer": v.Pointer}
		}
		errs = append(errs, e)
	}
	if len(errs) == 0 {
		errs = append(errs, map[string]any{"status": status, "code": code, "title": title})
	}
	writeJSON(w, status, map[string]any{"errors": errs})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errors":[{"code":"internal","message":"sandbox: cannot encode response"}]}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

var errBadJSON = errors.New("sandbox: body is not valid JSON")
