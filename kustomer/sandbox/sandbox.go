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
// PUT /v1/customers/{id}?replace=false, POST /v1/customers/bulk,
// GET /v1/bulk/{id}, GET /v1/bulk/{id}/batches.
//
// Bulk jobs run asynchronously, as Kustomer's bulk-operations guide describes:
// a submission answers with a queued job, which completes on the sandbox's
// clock after the timing model of [Config.BulkTiming] (in parallel for
// BulkDelay, one after another, or for durations spread over a range), and
// the variants the API leaves open are offered too: /batches with or without
// a status, an empty /batches until the job is done, and submissions whose
// answer is lost or late (the job runs all the same); bulk.go says which requests
// are rejected whole and which items fail one by one. No goroutine runs a job:
// due jobs are carried out at the next request or the next call of Stats,
// Customers or CountByExternalID, so a test drives them with [Config.Now].
//
// Several customers may share an email, a phone or an externalId (Kustomer
// does not refuse them). A look-up answers one customer, as Kustomer does: the
// oldest one that holds the value now.
package sandbox

import (
	"cmp"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	// TimeoutRate is the share of single creates that are stored, and of bulk
	// submissions that are queued, and then not answered until the client
	// gives up, or TimeoutHang passes (then 504).
	TimeoutRate float64
	// TimeoutHang bounds a simulated timeout; default TimeoutHangDefault.
	TimeoutHang time.Duration
	// Outage makes every request 503 while true.
	Outage bool
	// Seed drives the fault dice; 0 means a fixed default seed, so runs are
	// reproducible.
	Seed int64
	// Now is the clock for rate windows, timestamps and bulk jobs; default
	// time.Now.
	Now func() time.Time

	// BulkDelay is how long a bulk job takes on the clock: queued for the
	// first half, running for the second, then complete (its customers are
	// created then). 0 completes a job at the first request after its
	// submission.
	BulkDelay time.Duration
	// BulkItemFailureRate is the share of valid bulk items that fail in the
	// job's results with a transient 503 error, creating nothing.
	BulkItemFailureRate float64
	// BulkStuckRate is the share of bulk jobs that never complete: they stay
	// running and create nothing.
	BulkStuckRate float64
	// BulkSubmitErrorRate is the share of bulk submissions answered 503 after
	// spending their rate unit; nothing is queued.
	BulkSubmitErrorRate float64
	// BulkRejectInvalid makes a schema violation in any bulk item reject the
	// whole request with 400 (pointer "/<index>/<field>"), as a gateway that
	// validates the spec's array schema would. By default invalid items fail
	// one by one in the job's results and the others are created.
	BulkRejectInvalid bool
	// BulkTiming is how jobs are scheduled, one of [BulkTimings]:
	// BulkParallel (default) runs every job at once for BulkDelay;
	// BulkSerial queues them one after another, each BulkDelay once the one
	// before it completed; BulkSpread runs them at once, each for a duration
	// drawn evenly from BulkDelayMin to BulkDelay. Jobs complete on their
	// own schedule, polled or not: a look-up finds their customers then.
	BulkTiming string
	// BulkDelayMin is the shortest job of BulkSpread; at most BulkDelay.
	BulkDelayMin time.Duration
	// BulkBatchesNoStatus leaves "status" and "completed" out of
	// /v1/bulk/{id}/batches (the API lists objectIds, successCount,
	// failureCount, errors and results[] only): a reader must decide from
	// the counts.
	BulkBatchesNoStatus bool
	// BulkBatchesEmptyUntilDone answers /v1/bulk/{id}/batches with an empty
	// list until the job is complete.
	BulkBatchesEmptyUntilDone bool
	// BulkSubmitLostRate is the share of bulk submissions whose job is
	// queued (and runs) but whose answer is lost: withheld until the client
	// gives up or TimeoutHang passes (then 504).
	BulkSubmitLostRate float64
	// BulkSubmitLate delays every bulk submission's answer; the job is
	// queued (and its clock runs) before the wait.
	BulkSubmitLate time.Duration
}

// Bulk job timings, for [Config.BulkTiming].
const (
	BulkParallel = "parallel"
	BulkSerial   = "serial"
	BulkSpread   = "spread"
)

// BulkTimings lists the values of [Config.BulkTiming].
var BulkTimings = []string{BulkParallel, BulkSerial, BulkSpread}

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
	return Faults{
		Latency: c.Latency, ErrorRate: c.ErrorRate, TimeoutRate: c.TimeoutRate, Outage: c.Outage,
		BulkDelay: c.BulkDelay, BulkItemFailureRate: c.BulkItemFailureRate, BulkStuckRate: c.BulkStuckRate,
		BulkSubmitErrorRate: c.BulkSubmitErrorRate, BulkRejectInvalid: c.BulkRejectInvalid,
		BulkTiming: c.BulkTiming, BulkDelayMin: c.BulkDelayMin, BulkBatchesNoStatus: c.BulkBatchesNoStatus,
		BulkBatchesEmptyUntilDone: c.BulkBatchesEmptyUntilDone, BulkSubmitLostRate: c.BulkSubmitLostRate,
		BulkSubmitLate: c.BulkSubmitLate,
	}
}

// Faults are the failures and delays the sandbox injects; change them at
// runtime with [Sandbox.SetFaults]. The fields mean what Config's fields of
// the same names mean.
type Faults struct {
	Latency     time.Duration // added to every request
	ErrorRate   float64       // share of requests answered 503, in [0, 1]
	TimeoutRate float64       // share of creates and bulk submissions carried out but not answered, in [0, 1]
	Outage      bool          // every request 503

	BulkDelay           time.Duration // how long a bulk job takes; applies to jobs submitted later
	BulkItemFailureRate float64       // share of valid bulk items that fail transiently, in [0, 1]
	BulkStuckRate       float64       // share of bulk jobs that never complete, in [0, 1]
	BulkSubmitErrorRate float64       // share of bulk submissions answered 503, in [0, 1]
	BulkRejectInvalid   bool          // an invalid item rejects the whole bulk request

	BulkTiming                string        // BulkParallel (""), BulkSerial or BulkSpread
	BulkDelayMin              time.Duration // the shortest job of BulkSpread
	BulkBatchesNoStatus       bool          // /batches without "status" and "completed"
	BulkBatchesEmptyUntilDone bool          // /batches an empty list until the job is complete
	BulkSubmitLostRate        float64       // share of bulk submissions queued whose answer is lost, in [0, 1]
	BulkSubmitLate            time.Duration // delay of every bulk submission's answer
}

func (f Faults) validate() error {
	if f.Latency < 0 {
		return fmt.Errorf("sandbox: negative Latency %s", f.Latency)
	}
	if f.BulkDelay < 0 {
		return fmt.Errorf("sandbox: negative BulkDelay %s", f.BulkDelay)
	}
	if f.BulkDelayMin < 0 || f.BulkDelayMin > f.BulkDelay && f.BulkTiming == BulkSpread {
		return fmt.Errorf("sandbox: BulkDelayMin %s: want 0 to BulkDelay (%s)", f.BulkDelayMin, f.BulkDelay)
	}
	if f.BulkSubmitLate < 0 {
		return fmt.Errorf("sandbox: negative BulkSubmitLate %s", f.BulkSubmitLate)
	}
	if f.BulkTiming != "" && !slices.Contains(BulkTimings, f.BulkTiming) {
		return fmt.Errorf("sandbox: BulkTiming %q: want one of %s", f.BulkTiming, strings.Join(BulkTimings, ", "))
	}
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"ErrorRate", f.ErrorRate}, {"TimeoutRate", f.TimeoutRate}, {"BulkItemFailureRate", f.BulkItemFailureRate},
		{"BulkStuckRate", f.BulkStuckRate}, {"BulkSubmitErrorRate", f.BulkSubmitErrorRate},
		{"BulkSubmitLostRate", f.BulkSubmitLostRate},
	} {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("sandbox: %s %v is outside [0, 1]", r.name, r.v)
		}
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
	Lookups      int // customer look-ups answered 200 or 404, by id or by any key
	RateLimited  int // 429s
	ServerErrors int // injected 503s (ErrorRate, Outage, BulkSubmitErrorRate)
	Timeouts     int // creates and bulk submissions carried out but not answered (TimeoutRate)
	BadRequests  int // 400s
	Unauthorized int // 401s
	Duplicates   int // creates (single or bulk item) whose externalId already existed
	// ExternalIDs is how many distinct externalIds at least one customer
	// carries: len(CountByExternalID()), kept as customers change, so that
	// a benchmark polling its progress does not copy the whole index.
	ExternalIDs int

	LookupsByExternalID int // look-ups by externalId=, included in Lookups
	LookupsByEmail      int // look-ups by email=, included in Lookups
	LookupsByPhone      int // look-ups by phone=, included in Lookups
	Updates             int // customers updated by PUT (answered 200)

	BulkJobs        int // bulk jobs accepted (answered or not)
	BulkPolls       int // GET /v1/bulk/{id} and /batches answered 200 or 404
	BulkItemsFailed int // bulk items that failed in a job's results (schema or injected)
	BulkStuck       int // bulk jobs that will never complete (BulkStuckRate)
	BulkLost        int // bulk submissions queued whose answer was lost (BulkSubmitLostRate)
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
	byEmail   map[string][]int // lower-cased email → customers holding it, oldest first
	byPhone   map[string][]int
	bulks     map[string]*bulkJob
	pending   []*bulkJob // submitted, not complete, not stuck
	// serialFree is when the last job queued with BulkSerial completes:
	// the next one starts then.
	serialFree time.Time
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
		byEmail:     make(map[string][]int),
		byPhone:     make(map[string][]int),
		bulks:       make(map[string]*bulkJob),
	}, nil
}

// SetFaults replaces the injected faults, the bulk settings among them (to
// change one field, start from [Sandbox.Faults]); requests already past the
// fault checks and bulk jobs already submitted are not affected. It panics on an invalid Faults (negative latency,
// a rate outside [0, 1]): that is a bug in the test.
func (s *Sandbox) SetFaults(f Faults) {
	if err := f.validate(); err != nil {
		panic(err)
	}
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

// SetAPIKey replaces the key requests must carry ("" accepts any), as an
// admin rotating or granting a key in Kustomer would.
func (s *Sandbox) SetAPIKey(key string) {
	s.mu.Lock()
	s.apiKey = key
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
	s.settle(s.now())
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
	s.settle(s.now())
	defer s.mu.Unlock()
	return s.stats
}

// CountByExternalID returns how many customers carry each externalId;
// customers without one are not counted. A count above 1 is a duplicate.
func (s *Sandbox) CountByExternalID() map[string]int {
	s.mu.Lock()
	s.settle(s.now())
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.byExt))
	for k, v := range s.byExt {
		if len(v) > 0 { // an update can take a customer's externalId away
			out[k] = len(v)
		}
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
	s.settle(s.now())
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
	s.mu.Lock()
	apiKey := s.apiKey
	s.mu.Unlock()
	if apiKey != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+apiKey)) != 1 {
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
	writeJSON(w, status, map[string]any{"errors": apiErrors(status, code, title, vs)})
}

// apiErrors is the JSON:API errors array for vs, or one error with title when
// vs is empty.
func apiErrors(status int, code, title string, vs []violation) []map[string]any {
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
	return errs
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
