package kustomer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

const testKey = "sk-test-SECRET-abc123"

var fixedNow = time.Date(2026, 5, 24, 12, 0, 0, 0, time.UTC)

// fixture is a client wired to an httptest server running handler.
type fixture struct {
	client *kustomer.Client
	url    string
	mu     sync.Mutex
	seen   []kustomer.RateLimit
}

// call makes the request op names: "create" (an empty customer) or
// "lookup" (by externalID); it answers the request's error.
func (f *fixture) call(t *testing.T, op, externalID string) error {
	t.Helper()
	if op == "create" {
		_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
		return err
	}
	_, err := f.client.CustomerByExternalID(t.Context(), externalID)
	return err
}

func setup(t *testing.T, handler http.HandlerFunc, mod ...func(*kustomer.Config)) *fixture {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	f := &fixture{url: srv.URL}
	cfg := kustomer.Config{
		BaseURL: srv.URL,
		APIKey:  testKey,
		Now:     func() time.Time { return fixedNow },
		OnResponse: func(rl kustomer.RateLimit) {
			f.mu.Lock()
			f.seen = append(f.seen, rl)
			f.mu.Unlock()
		},
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := kustomer.New(cfg)
	require.NoError(t, err)
	f.client = c
	return f
}

// hang answers nothing until the client goes away. It reads the body first:
// the server notices a closed connection only once the body is consumed.
func hang(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

func respond(status int, body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func asError(t *testing.T, err error) *kustomer.Error {
	t.Helper()
	require.Error(t, err)
	var ke *kustomer.Error
	require.ErrorAs(t, err, &ke)
	require.NotContains(t, err.Error(), testKey)
	return ke
}

const customerJSON = `{"data":{"type":"customer","id":"0123456789abcdef01234567","attributes":{"name":"Jane"},"links":{"self":"/v1/customers/0123456789abcdef01234567"}}}`

func TestClientSendsBearerKeyJSONBodyAndUserAgent(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var body []byte
	f := setup(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		body, _ = io.ReadAll(r.Body)
		respond(http.StatusCreated, customerJSON)(w, r)
	})
	c, err := f.client.CreateCustomer(t.Context(), map[string]any{"name": "Jane"})
	require.NoError(t, err)
	require.Equal(t, "0123456789abcdef01234567", c.ID)
	require.Equal(t, "customer", c.Type)
	require.Equal(t, "Jane", c.Attributes["name"])
	require.Equal(t, "/v1/customers/0123456789abcdef01234567", c.Links["self"])

	require.Equal(t, http.MethodPost, got.Method)
	require.Equal(t, "/v1/customers", got.URL.Path)
	require.Equal(t, "Bearer "+testKey, got.Header.Get("Authorization"))
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	require.Equal(t, kustomer.UserAgentDefault, got.Header.Get("User-Agent"))
	require.JSONEq(t, `{"name":"Jane"}`, string(body))
}

func TestClientPassesRawJSONThrough(t *testing.T) {
	t.Parallel()
	var body []byte
	f := setup(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		respond(http.StatusCreated, customerJSON)(w, r)
	})
	raw := json.RawMessage(`{"name":"Jane",  "custom":{"tierStr":"gold"}}`)
	_, err := f.client.CreateCustomer(t.Context(), raw)
	require.NoError(t, err)
	require.Equal(t, string(raw), string(body))
}

// Look-ups escape the value they look up by in the path: an external id's
// slash, space, non-ASCII letter and question mark; a phone's plus.
func TestLookUpsEscapeTheirValueInThePath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		lookUp func(context.Context, *kustomer.Client) (*kustomer.Customer, error)
		path   string
	}{
		{func(ctx context.Context, c *kustomer.Client) (*kustomer.Customer, error) {
			return c.CustomerByExternalID(ctx, "lead/42 ä?x")
		}, "/v1/customers/externalId=lead%2F42%20%C3%A4%3Fx"},
		{func(ctx context.Context, c *kustomer.Client) (*kustomer.Customer, error) {
			return c.CustomerByPhone(ctx, "+14155550100")
		}, "/v1/customers/phone=%2B14155550100"},
	} {
		var rawPath string
		f := setup(t, func(w http.ResponseWriter, r *http.Request) {
			rawPath = r.URL.EscapedPath()
			respond(http.StatusOK, customerJSON)(w, r)
		})
		c, err := tc.lookUp(t.Context(), f.client)
		require.NoError(t, err)
		require.Equal(t, "0123456789abcdef01234567", c.ID)
		require.Equal(t, tc.path, rawPath)
	}
}

func TestClientClassifiesEveryStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		op     string
		class  kustomer.Class
	}{
		{400, "create", kustomer.ClassPermanent},
		{404, "create", kustomer.ClassSystemic},
		{409, "create", kustomer.ClassPermanent},
		{413, "create", kustomer.ClassPermanent},
		{422, "create", kustomer.ClassPermanent},
		{401, "create", kustomer.ClassSystemic},
		{403, "create", kustomer.ClassSystemic},
		{429, "create", kustomer.ClassRetryable},
		{500, "create", kustomer.ClassRetryable},
		{502, "create", kustomer.ClassRetryable},
		{503, "create", kustomer.ClassRetryable},
		{504, "create", kustomer.ClassRetryable},
		{404, "lookup", kustomer.ClassPermanent},
		{401, "lookup", kustomer.ClassSystemic},
		{500, "lookup", kustomer.ClassRetryable},
	}
	for _, tc := range cases {
		t.Run(tc.op+"_"+strconv.Itoa(tc.status), func(t *testing.T) {
			t.Parallel()
			f := setup(t, respond(tc.status, `{"errors":[{"code":"x","message":"nope"}]}`))
			err := f.call(t, tc.op, "e1")
			ke := asError(t, err)
			require.Equal(t, tc.class, ke.Class)
			require.Equal(t, tc.class, kustomer.ClassOf(err))
			require.Equal(t, tc.status, ke.StatusCode)
			require.Equal(t, tc.op, ke.Op)
			require.Equal(t, tc.status == 404 && tc.op == "lookup", kustomer.IsNotFound(err))
			require.Equal(t, tc.status == 504, ke.Timeout, "only a gateway timeout leaves the outcome unknown")
			require.True(t, strings.HasPrefix(err.Error(), "kustomer: "+tc.op+": "), err.Error())
		})
	}
}

func TestClientTreatsAnswersThatAreNotKustomersAPIAsSystemic(t *testing.T) {
	t.Parallel()
	const html = "<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>"
	const notFoundJSON = `{"errors":[{"status":404,"code":"notfound","title":"Not Found"}]}`
	cases := []struct {
		name        string
		op          string
		status      int
		body        string
		class       kustomer.Class
		notFound    bool
		unknown     bool // the outcome is unknown
		foreignHost bool // the message blames the base URL
	}{
		{"create 404 html", "create", 404, html, kustomer.ClassSystemic, false, false, true},
		{"create 404 Kustomer json", "create", 404, notFoundJSON, kustomer.ClassSystemic, false, false, true},
		{"create 400 html", "create", 400, html, kustomer.ClassSystemic, false, false, true},
		{"create 405 text", "create", 405, "method not allowed", kustomer.ClassSystemic, false, false, true},
		{"create 400 other json", "create", 400, `{"message":"bad"}`, kustomer.ClassSystemic, false, false, true},
		{"create 413 html is about the request", "create", 413, html, kustomer.ClassPermanent, false, false, false},
		{"create 400 Kustomer json", "create", 400, `{"errors":[{"code":"badparam","title":"x"}]}`, kustomer.ClassPermanent, false, false, false},
		{"create 200 html", "create", 200, html, kustomer.ClassSystemic, false, false, true},
		{"create 201 json without a customer", "create", 201, `{"ok":true}`, kustomer.ClassSystemic, false, false, true},
		{"create 429 without a body stays a rate limit", "create", 429, "", kustomer.ClassRetryable, false, false, false},
		{"create 502 html stays an outage", "create", 502, html, kustomer.ClassRetryable, false, false, false},
		{"lookup 404 Kustomer notfound", "lookup", 404, notFoundJSON, kustomer.ClassPermanent, true, false, false},
		{"lookup 404 html", "lookup", 404, html, kustomer.ClassSystemic, false, false, true},
		{"lookup 404 empty", "lookup", 404, "", kustomer.ClassSystemic, false, false, true},
		{"lookup 404 other json", "lookup", 404, `{"message":"Not Found"}`, kustomer.ClassSystemic, false, false, true},
		{"lookup 200 html", "lookup", 200, html, kustomer.ClassSystemic, false, false, true},
		{"lookup 200 json without a customer", "lookup", 200, `{}`, kustomer.ClassSystemic, false, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, respond(tc.status, tc.body, "Content-Type", "text/html"))
			err := f.call(t, tc.op, "lead-secret-77")
			ke := asError(t, err)
			require.Equal(t, tc.class, ke.Class, err.Error())
			require.Equal(t, tc.notFound, kustomer.IsNotFound(err), err.Error())
			require.Equal(t, tc.unknown, ke.Timeout, err.Error())
			require.Equal(t, tc.status, ke.StatusCode)
			require.Equal(t, tc.foreignHost, strings.Contains(err.Error(), f.url+" does not answer as Kustomer's API (check the base URL)"), err.Error())
			require.NotContains(t, err.Error(), "lead-secret-77", "the looked-up value stays out of the message")
		})
	}
}

func TestClientParsesSimpleErrorShape(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(400, `{"errors":[{"code":"invalidEmail","message":"email is invalid","meta":{"field":"emails"}}]}`))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.Equal(t, "invalidEmail", ke.Code)
	require.Equal(t, "email is invalid", ke.Message)
	require.Empty(t, ke.Pointer)
}

func TestClientParsesJSONAPIErrorShapeWithPointerOrParameter(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(400, `{"errors":[{"status":400,"code":"badparam","title":"Invalid email","detail":"not an email address","source":{"pointer":"/emails/3/email"}},{"status":400,"code":"badparam","title":"x"}]}`))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.Equal(t, "badparam", ke.Code)
	require.Equal(t, "/emails/3/email", ke.Pointer)
	require.Contains(t, ke.Message, "Invalid email: not an email address")
	require.Contains(t, ke.Message, "(and 1 more)")

	f = setup(t, respond(400, `{"errors":[{"status":"400","code":"badparam","title":"Additional properties not allowed","detail":"/properties/custom/additionalProperties","source":{"parameter":"custom"}}]}`))
	_, err = f.client.CreateCustomer(t.Context(), map[string]any{})
	ke = asError(t, err)
	require.Equal(t, "custom", ke.Pointer)
	require.Equal(t, "Additional properties not allowed: /properties/custom/additionalProperties", ke.Message)
}

func TestClientParsesSubErrorsUnderMeta(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(400, `{"errors":[{"status":400,"code":"validation","title":"Validation failed","meta":{"subErrors":[{"title":"must be E.164","source":{"pointer":"/phones/0/phone"}},{"title":"too long","source":{"pointer":"/name"}}]}}]}`))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.Equal(t, "/phones/0/phone", ke.Pointer)
	require.Equal(t, "Validation failed: /phones/0/phone must be E.164; /name too long", ke.Message)
}

func TestClientTruncatesNonJSONErrorBody(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(502, "<html>\n<body>Bad   gateway "+strings.Repeat("x", 5000)+"</body></html>", "Content-Type", "text/html"))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.True(t, strings.HasPrefix(ke.Message, "bad gateway: <html> <body>Bad gateway xxx"), ke.Message)
	require.Less(t, len(ke.Message), 300)
	require.True(t, strings.HasSuffix(ke.Message, "…"))
}

func TestClientReadsRetryAfterIn429(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		headers []string
		want    time.Duration
	}{
		"seconds":                   {[]string{"Retry-After", "7"}, 7 * time.Second},
		"http date":                 {[]string{"Retry-After", fixedNow.Add(12 * time.Second).Format(http.TimeFormat)}, 12 * time.Second},
		"date in the past":          {[]string{"Retry-After", fixedNow.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		"reset as epoch seconds":    {[]string{"X-Ratelimit-Reset", strconv.FormatInt(fixedNow.Add(30*time.Second).Unix(), 10)}, 30 * time.Second},
		"reset as seconds from now": {[]string{"X-Ratelimit-Reset", "17"}, 17 * time.Second},
		"reset as epoch millis":     {[]string{"X-Ratelimit-Reset", strconv.FormatInt(fixedNow.Add(2500*time.Millisecond).UnixMilli(), 10)}, 2500 * time.Millisecond},
		"retry-after wins":          {[]string{"Retry-After", "3", "X-Ratelimit-Reset", "40"}, 3 * time.Second},
		"nothing":                   {nil, 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, respond(429, `{"errors":[{"code":"rateLimited","message":"slow down"}]}`, tc.headers...))
			_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
			ke := asError(t, err)
			require.Equal(t, kustomer.ClassRetryable, ke.Class)
			require.Equal(t, "rateLimited", ke.Code)
			require.Equal(t, tc.want, ke.RetryAfter)
			require.Equal(t, tc.want, kustomer.RetryAfterOf(err))
			require.Equal(t, tc.want, f.client.RateLimit().RetryAfter)
			require.Equal(t, 429, f.client.RateLimit().Status)
		})
	}
}

func TestClientRecordsRateLimitHeadersAndCallsOnResponse(t *testing.T) {
	t.Parallel()
	reset := fixedNow.Add(45 * time.Second)
	f := setup(t, respond(http.StatusCreated, customerJSON,
		"X-Ratelimit-Limit", "1000", "X-Ratelimit-Remaining", "998", "X-Ratelimit-Reset", strconv.FormatInt(reset.Unix(), 10)))
	require.Zero(t, f.client.RateLimit())
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	require.NoError(t, err)
	want := kustomer.RateLimit{Limit: 1000, Remaining: 998, Reset: reset, Status: 201}
	require.Equal(t, want.Limit, f.client.RateLimit().Limit)
	require.Equal(t, want.Remaining, f.client.RateLimit().Remaining)
	require.True(t, want.Reset.Equal(f.client.RateLimit().Reset))
	require.Equal(t, 201, f.client.RateLimit().Status)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.seen, 1)
	require.Equal(t, 998, f.seen[0].Remaining)
}

func TestClientDoesNotCallOnResponseWithoutRateLimitHeaders(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusCreated, customerJSON))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	require.NoError(t, err)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(t, f.seen)
}

func TestClientReportsTimeoutAsRetryableWithUnknownOutcome(t *testing.T) {
	t.Parallel()
	f := setup(t, hang, func(c *kustomer.Config) { c.Timeout = 50 * time.Millisecond })
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{"name": "x"})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.True(t, ke.Timeout)
	require.Zero(t, ke.StatusCode)
	require.NotErrorIs(t, err, context.Canceled)
}

func TestClientReportsConnectionRefusedAsRetryableNotSent(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	c, err := kustomer.New(kustomer.Config{BaseURL: "http://" + addr, APIKey: testKey})
	require.NoError(t, err)
	_, err = c.CreateCustomer(t.Context(), map[string]any{"name": "x"})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.False(t, ke.Timeout, "a refused connection never carried the request")
	require.Contains(t, ke.Message, "connection failed")
}

func TestClientReportsDroppedConnectionAsUnknownOutcome(t *testing.T) {
	t.Parallel()
	f := setup(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{"name": "x"})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.True(t, ke.Timeout)
}

func TestClientReturnsCallerCancellationAsContextError(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{})
	f := setup(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		hang(w, r)
	})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := f.client.CreateCustomer(ctx, map[string]any{"name": "x"})
	require.ErrorIs(t, err, context.Canceled)
	var ke *kustomer.Error
	require.False(t, errors.As(err, &ke), "cancellation is not a Kustomer failure")
	require.True(t, strings.HasPrefix(err.Error(), "kustomer: create: "))
}

func TestClientReturnsCallerDeadlineAsContextError(t *testing.T) {
	t.Parallel()
	f := setup(t, hang)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := f.client.CustomerByExternalID(ctx, "x")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ke *kustomer.Error
	require.False(t, errors.As(err, &ke))
}

func TestClientNeverPutsKeyInErrors(t *testing.T) {
	t.Parallel()
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"code":"`+r.Header.Get("Authorization")+`","message":"bad key `+testKey+`","source":{"pointer":"`+testKey+`"}}]}`)
	}
	f := setup(t, echo)
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.NotContains(t, ke.Code+ke.Message+ke.Pointer, testKey)

	f = setup(t, respond(500, "internal error for key "+testKey))
	_, err = f.client.CreateCustomer(t.Context(), map[string]any{})
	asError(t, err)

	f = setup(t, hang, func(c *kustomer.Config) { c.Timeout = 20 * time.Millisecond })
	_, err = f.client.CustomerByExternalID(t.Context(), "e")
	asError(t, err)
}

func TestClientTreatsUnreadableSuccessAsUnknownOutcome(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusCreated, `{"data":`))
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassRetryable, ke.Class)
	require.True(t, ke.Timeout, "the customer may exist: look it up before creating again")
}

func TestClientRejectsUnencodableBodyWithoutRequest(t *testing.T) {
	t.Parallel()
	f := setup(t, func(w http.ResponseWriter, r *http.Request) { t.Error("no request expected") })
	_, err := f.client.CreateCustomer(t.Context(), map[string]any{"bad": make(chan int)})
	ke := asError(t, err)
	require.Equal(t, kustomer.ClassPermanent, ke.Class)
	_, err = f.client.CustomerByExternalID(t.Context(), "")
	require.Equal(t, kustomer.ClassPermanent, kustomer.ClassOf(err))
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	_, err := kustomer.New(kustomer.Config{})
	require.ErrorContains(t, err, "APIKey")
	_, err = kustomer.New(kustomer.Config{APIKey: "k", BaseURL: "ftp://x"})
	require.ErrorContains(t, err, "ftp://x")
	_, err = kustomer.New(kustomer.Config{APIKey: "k", Timeout: -time.Second})
	require.Error(t, err)
	_, err = kustomer.New(kustomer.Config{APIKey: "k\n"})
	require.Error(t, err)
	c, err := kustomer.New(kustomer.Config{APIKey: "k"})
	require.NoError(t, err)
	require.NotNil(t, c)
}

func TestBaseURLForMapsRegionsOrgsAndURLs(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"":                        kustomer.DefaultBaseURL,
		"us":                      "https://api.kustomerapp.com",
		"EU":                      "https://api.prod2.kustomerapp.com",
		"prod2":                   "https://api.prod2.kustomerapp.com",
		"in":                      "https://api.prod4.kustomerapp.com",
		"india":                   "https://api.prod4.kustomerapp.com",
		"prod4":                   "https://api.prod4.kustomerapp.com",
		"acme":                    "https://acme.api.kustomerapp.com",
		"my-org2":                 "https://my-org2.api.kustomerapp.com",
		"http://127.0.0.1:8089":   "http://127.0.0.1:8089",
		"https://eu.example/base": "https://eu.example/base",
	}
	for in, want := range good {
		got, err := kustomer.BaseURLFor(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"ac me", "-acme", "ftp://x.y", "http://", "acme.com"} {
		_, err := kustomer.BaseURLFor(bad)
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), bad)
	}
}

func TestClientIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	f := setup(t, respond(http.StatusCreated, customerJSON, "X-Ratelimit-Limit", "10", "X-Ratelimit-Remaining", "5"))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := f.client.CreateCustomer(t.Context(), map[string]any{"name": "x"})
			require.NoError(t, err)
			_ = f.client.RateLimit()
		})
	}
	wg.Wait()
	require.Equal(t, 10, f.client.RateLimit().Limit)
}

// A server's graceful shutdown waits for every open connection; a client
// done with Kustomer closes those it keeps idle.
func TestCloseIdleConnectionsLetsTheServerShutDownAtOnce(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"data":{"type":"customer","id":"c1","attributes":{"name":"Ada"}}}`)
	}))
	var open sync.WaitGroup
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Done()
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := kustomer.New(kustomer.Config{BaseURL: srv.URL, APIKey: testKey})
	require.NoError(t, err)
	created, err := c.CreateCustomer(t.Context(), map[string]any{"name": "Ada"})
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"Ada"}`, string(created.RawAttributes), "the attributes as Kustomer sent them")

	c.CloseIdleConnections()
	closed := make(chan struct{})
	go func() { open.Wait(); close(closed) }()
	select {
	case <-closed: // every connection the client opened is closed
	case <-time.After(10 * time.Second):
		t.Fatal("the client's idle connection is still open")
	}
}
