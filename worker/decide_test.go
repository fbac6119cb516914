package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/result"
)

// want is the decision an answer must come to.
type want struct {
	decision  error         // nil, or one of the loop's decision types
	delay     time.Duration // RetryError's or UnknownError's Delay
	throttled bool
	status    int // the Kustomer status still readable through the decision
}

func requireDecision(t *testing.T, w want, got error) {
	t.Helper()
	if w.decision == nil {
		require.NoError(t, got)
		return
	}
	require.ErrorIs(t, got, w.decision)
	for _, other := range []error{&loop.RetryError{}, &loop.PermanentError{}, &loop.PauseError{}, &loop.UnknownError{}, &loop.LaterError{}} {
		if !errors.Is(w.decision, other) {
			require.NotErrorIs(t, got, other, "one decision per answer")
		}
	}
	var re *loop.RetryError
	if errors.As(got, &re) {
		require.Equal(t, w.delay, re.Delay, "retry delay")
		require.Equal(t, w.throttled, re.Throttled, "throttled")
	}
	var ue *loop.UnknownError
	if errors.As(got, &ue) {
		require.Equal(t, w.delay, ue.Delay, "unknown outcome's delay")
	}
	var le *loop.LaterError
	if errors.As(got, &le) {
		require.Equal(t, w.delay, le.Delay, "how long the item is held")
	}
	var ke *kustomer.Error
	if w.status != 0 {
		require.ErrorAs(t, got, &ke)
		require.Equal(t, w.status, ke.StatusCode, "Kustomer's status survives the decision")
	}
	require.NotContains(t, got.Error(), "loop.", "no Go type name in the message")
}

func respondWith(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hangUntilGone answers nothing until the client goes away.
func hangUntilGone(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

func TestDecideMapsEveryKustomerAnswerToOneLoopDecision(t *testing.T) {
	t.Parallel()
	const created = `{"data":{"type":"customer","id":"0123456789abcdef01234567","attributes":{"name":"Ada"}}}`
	const refused = `{"errors":[{"status":400,"code":"badparam","title":"invalid email"}]}`
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    want
	}{
		{"201 created", respondWith(201, created), want{}},
		{"400 bad request", respondWith(400, refused), want{decision: &loop.PermanentError{}, status: 400}},
		{"404 on a create: the base URL is not Kustomer's API", respondWith(404, `{"errors":[{"status":404,"code":"notfound"}]}`), want{decision: &loop.PauseError{}, status: 404}},
		{"an HTML page: the base URL is not Kustomer's API", respondWith(400, `<html>Bad Request</html>`), want{decision: &loop.PauseError{}, status: 400}},
		{"422 unprocessable", respondWith(422, refused), want{decision: &loop.PermanentError{}, status: 422}},
		{"401 bad key", respondWith(401, `{"errors":[{"code":"unauthorized"}]}`), want{decision: &loop.PauseError{}, status: 401}},
		{"403 role or region", respondWith(403, `{"errors":[{"code":"forbidden"}]}`), want{decision: &loop.PauseError{}, status: 403}},
		{"429 with Retry-After", respondWith(429, `{}`, "Retry-After", "7"),
			want{decision: &loop.RetryError{}, delay: 7 * time.Second, throttled: true, status: 429}},
		{"429 with only a reset", respondWith(429, `{}`, "X-Ratelimit-Reset", "12"),
			want{decision: &loop.RetryError{}, delay: 12 * time.Second, throttled: true, status: 429}},
		{"503 with Retry-After", respondWith(503, `{}`, "Retry-After", "3"), want{decision: &loop.RetryError{}, delay: 3 * time.Second, status: 503}},
		{"500", respondWith(500, `oops`), want{decision: &loop.RetryError{}, status: 500}},
		{"504 with Retry-After", respondWith(504, `{}`, "Retry-After", "4"), want{decision: &loop.UnknownError{}, delay: 4 * time.Second, status: 504}},
		{"201 with an unreadable body", respondWith(201, `{"data":`), want{decision: &loop.UnknownError{}, status: 201}},
		{"no answer within the timeout", hangUntilGone, want{decision: &loop.UnknownError{}}},
		{"connection dropped mid-request", func(w http.ResponseWriter, r *http.Request) {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
		}, want{decision: &loop.UnknownError{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.handler)
			t.Cleanup(srv.Close)
			now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
			c, err := kustomer.New(kustomer.Config{BaseURL: srv.URL, APIKey: testAPIKey, Timeout: 100 * time.Millisecond, Now: func() time.Time { return now }})
			require.NoError(t, err)
			_, err = c.CreateCustomer(t.Context(), map[string]any{"name": "Ada"})
			requireDecision(t, tc.want, kustomerDecision(err))
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		c, err := kustomer.New(kustomer.Config{BaseURL: "http://" + addr, APIKey: testAPIKey})
		require.NoError(t, err)
		_, err = c.CreateCustomer(t.Context(), map[string]any{"name": "Ada"})
		requireDecision(t, want{decision: &loop.RetryError{}}, kustomerDecision(err))
	})

	t.Run("our own cancellation mid-request", func(t *testing.T) {
		t.Parallel()
		arrived := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			hangUntilGone(w, r)
		}))
		t.Cleanup(srv.Close)
		c, err := kustomer.New(kustomer.Config{BaseURL: srv.URL, APIKey: testAPIKey})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-arrived
			cancel()
		}()
		_, err = c.CreateCustomer(ctx, map[string]any{"name": "Ada"})
		got := kustomerDecision(err)
		requireDecision(t, want{decision: &loop.UnknownError{}}, got)
		require.ErrorIs(t, got, context.Canceled)
	})

	t.Run("an error nobody classified", func(t *testing.T) {
		t.Parallel()
		bug := errors.New("worker: something unforeseen")
		got := kustomerDecision(bug)
		requireDecision(t, want{decision: &loop.PermanentError{}}, got)
		require.ErrorIs(t, got, bug)
		require.Equal(t, bug.Error(), got.Error())
	})
}

func TestObserveRateLimitsTellsTheLimiterWhatEachResponseSaid(t *testing.T) {
	t.Parallel()
	reset := time.Date(2026, 11, 28, 12, 1, 0, 0, time.UTC)
	require.Equal(t,
		loop.Observation{Limit: 1000, Remaining: 10, Reset: reset},
		observation(kustomer.RateLimit{Limit: 1000, Remaining: 10, Reset: reset, Status: 201}))
	require.Equal(t,
		loop.Observation{Limit: 1000, Reset: reset, RetryAfter: 9 * time.Second, Throttled: true},
		observation(kustomer.RateLimit{Limit: 1000, Reset: reset, RetryAfter: 9 * time.Second, Status: 429}))

	// Through the client: a 429 pauses every waiter for its Retry-After.
	srv := httptest.NewServer(respondWith(429, `{}`, "Retry-After", "30"))
	t.Cleanup(srv.Close)
	lim, err := loop.NewLimiter(loop.LimiterConfig{})
	require.NoError(t, err)
	c, err := kustomer.New(kustomer.Config{BaseURL: srv.URL, APIKey: testAPIKey, OnResponse: ObserveRateLimits(lim)})
	require.NoError(t, err)
	before := time.Now()
	_, err = c.CreateCustomer(t.Context(), map[string]any{"name": "Ada"})
	require.Error(t, err)
	require.WithinDuration(t, before.Add(30*time.Second), lim.PausedUntil(), 5*time.Second)
}

func TestAnItemClaimedElsewhereOrALedgerOutageIsARetryNotAKustomerError(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := t.Context()
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	open := func(owner string) *ledger.Ledger {
		l, err := ledger.Open(ctx, js, ledger.Config{Bucket: "DECIDE_LEDGER", Lease: 30 * time.Second}, owner, func() time.Time { return at })
		require.NoError(t, err)
		return l
	}
	mine, theirs := open("replica-a"), open("replica-b")
	key := ledger.Key("wf", "lead-1")
	_, err := theirs.Claim(ctx, key, "")
	require.NoError(t, err)

	// The claim is decided before Kustomer or the limiter is asked.
	w := &Worker{ledger: mine, js: js, log: zerolog.Nop(), cfg: Config{ResultsStream: result.StreamDefault, Ledger: ledger.Config{Bucket: "DECIDE_LEDGER"}, Clock: loop.SystemClock()}}
	ev := &event{log: zerolog.Nop()}
	_, err = w.createItem(ctx, nil, ev, mapping.Request{"name": "Ada"}, key, 0, 1, &itemNote{})
	requireDecision(t, want{decision: &loop.LaterError{}, delay: 30 * time.Second}, err)
	require.ErrorIs(t, err, ledger.ErrClaimed)
	var ke *kustomer.Error
	require.False(t, errors.As(err, &ke), "a ledger conflict is not Kustomer's answer")

	// A ledger bucket deleted while running: recreated at once, and the
	// item tried again without spending an attempt or telling the breaker
	// (which pauses on Kustomer failing).
	require.NoError(t, js.DeleteKeyValue(ctx, "DECIDE_LEDGER"))
	_, err = w.createItem(ctx, nil, ev, mapping.Request{"name": "Ada"}, ledger.Key("wf", "lead-2"), 0, 1, &itemNote{})
	requireDecision(t, want{decision: &loop.LaterError{}}, err)
	require.False(t, errors.As(err, &ke), "a ledger outage is not Kustomer's answer")
	require.Regexp(t, "^worker: idempotency ledger unavailable: ", err.Error())
	_, err = js.KeyValue(ctx, "DECIDE_LEDGER")
	require.NoError(t, err, "the ledger bucket is recreated")
}

func TestADeadLetterCarriesKustomersStatusAndCodeAsPlainFields(t *testing.T) {
	t.Parallel()
	err := loop.Permanent(fmt.Errorf("worker: item 2: %w", &kustomer.Error{
		Op: "create", Class: kustomer.ClassPermanent, StatusCode: 422, Code: "badparam", Message: "emails[0].email is invalid",
	}))
	r := withError(dlq.Record{Class: outcome.Permanent}, err)
	require.Equal(t, 422, r.StatusCode)
	require.Equal(t, "badparam", r.Code)
	require.Equal(t, err.Error(), r.Error)
	require.Equal(t, "422", r.Header().Get(dlq.HeaderStatusCode))
	require.Equal(t, "badparam", r.Header().Get(dlq.HeaderKustomerCode))

	local := withError(dlq.Record{Class: outcome.Mapping}, errors.New("mapping: name: too long"))
	require.Zero(t, local.StatusCode, "no Kustomer answer, no status")
	require.Empty(t, local.Code)
	require.Equal(t, dlq.Record{Class: outcome.Mapping}, withError(dlq.Record{Class: outcome.Mapping}, nil))
}

func TestALogLineNamesTheDecisionNotTheClientsClass(t *testing.T) {
	t.Parallel()
	ledger := loop.RetryAfter(0, fmt.Errorf("worker: idempotency ledger unavailable: %w", errors.New("nats: timeout")))
	for err, want := range map[error]string{
		nil:    "",
		ledger: "retry",
		kustomerDecision(&kustomer.Error{Op: "create", Class: kustomer.ClassRetryable, StatusCode: 429}): "throttled",
		kustomerDecision(&kustomer.Error{Op: "create", Class: kustomer.ClassRetryable, StatusCode: 503}): "retry",
		kustomerDecision(&kustomer.Error{Op: "create", Class: kustomer.ClassRetryable, Timeout: true}):   "unknown",
		kustomerDecision(&kustomer.Error{Op: "create", Class: kustomer.ClassSystemic, StatusCode: 401}):  "pause",
		kustomerDecision(&kustomer.Error{Op: "create", Class: kustomer.ClassPermanent, StatusCode: 400}): "permanent",
		errors.New("mapping: name: too long"): "permanent",
	} {
		require.Equal(t, want, loop.DecisionName(err), "%v", err)
	}
}
