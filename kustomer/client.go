package kustomer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

const (
	// DefaultBaseURL is Kustomer's US host.
	DefaultBaseURL = "https://api.kustomerapp.com"
	// DefaultTimeout bounds one HTTP request, response body included.
	DefaultTimeout = 10 * time.Second
	// UserAgentDefault is the User-Agent sent when Config.UserAgent is empty.
	UserAgentDefault = "kustomer-sync"

	// BulkMax is the most customers one bulk request may carry.
	BulkMax = 100

	// maxBody caps how much of a response body the client reads.
	maxBody = 8 << 20
)

// Regional hosts, from Kustomer's developer docs.
const (
	baseURLEU    = "https://api.prod2.kustomerapp.com"
	baseURLIndia = "https://api.prod4.kustomerapp.com"
)

var (
	regions = map[string]string{
		"us":    DefaultBaseURL,
		"eu":    baseURLEU,
		"prod2": baseURLEU,
		"in":    baseURLIndia,
		"india": baseURLIndia,
		"prod4": baseURLIndia,
	}
	orgNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// BaseURLFor turns a region, an org name or a URL into a base URL:
// "us" gives [DefaultBaseURL]; "eu" or "prod2" the EU host; "in", "india" or
// "prod4" the Indian host; an http(s) URL is returned as is; an org name such as
// "acme" gives https://acme.api.kustomerapp.com (a host that routes itself).
// The empty string gives [DefaultBaseURL]. Regions and org names are
// case-insensitive. The error names the value it could not use.
func BaseURLFor(s string) (string, error) {
	v := strings.TrimSpace(s)
	if v == "" {
		return DefaultBaseURL, nil
	}
	if strings.Contains(v, "://") {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("kustomer: base URL %q is not an http(s) URL", redactUserinfo(s))
		}
		return v, nil
	}
	lv := strings.ToLower(v)
	if u, ok := regions[lv]; ok {
		return u, nil
	}
	if orgNameRE.MatchString(lv) {
		return "https://" + lv + ".api.kustomerapp.com", nil
	}
	return "", fmt.Errorf("kustomer: %q is neither a region (us, eu, in), an org name nor an http(s) URL", redactUserinfo(s))
}

// redactUserinfo hides what comes before the last "@" of a URL (a user and
// password, possibly with characters that keep it from parsing) so that it
// can be printed.
func redactUserinfo(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return s[:start] + "[redacted]" + s[at:]
}

// Config configures a [Client]. Only APIKey is required.
type Config struct {
	// BaseURL is the API root, without /v1; default [DefaultBaseURL]. See [BaseURLFor].
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>". It is never logged nor
	// put in errors.
	APIKey string
	// Timeout bounds each request; default [DefaultTimeout].
	Timeout time.Duration
	// HTTPClient, when set, sends the requests; its own Timeout, if any, still
	// applies. Default: a client with a connection pool sized for concurrent use.
	HTTPClient *http.Client
	// WrapTransport, when set, wraps the transport of the client's requests
	// (HTTPClient's, or the default one), e.g. in tracing.Transport.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// UserAgent is sent with each request; default [UserAgentDefault].
	UserAgent string
	// OnResponse, when set, is called after every HTTP response that carried
	// rate-limit headers (x-ratelimit-*, Retry-After) and after every 429. It
	// runs on the calling goroutine and must not block.
	OnResponse func(RateLimit)
	// OnRequest, when set, is called once per request sent, after its
	// answer was read or it failed, e.g. to count requests by kind and
	// status for metrics. It runs on the calling goroutine and must not block.
	OnRequest func(RequestInfo)
	// Now is the clock used to turn Retry-After dates and x-ratelimit-reset into
	// durations; default time.Now.
	Now func() time.Time
}

// RequestInfo describes one request the client sent, for [Config.OnRequest].
type RequestInfo struct {
	// Kind is what the request did: "create", "lookup", "update" or "bulk"
	// (a bulk create, or reading a bulk job or its results).
	Kind string
	// StatusCode is the HTTP status answered; 0 when no answer came (a
	// timeout, a failed or lost connection).
	StatusCode int
	// Duration is from sending the request to reading the whole answer.
	Duration time.Duration
}

func (c Config) validate() error {
	if c.APIKey == "" {
		return errors.New("kustomer: config: APIKey is empty")
	}
	if strings.ContainsAny(c.APIKey, "\r\n") {
		return errors.New("kustomer: config: APIKey contains a line break")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("kustomer: config: negative Timeout %s", c.Timeout)
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("kustomer: config: BaseURL %q is not an http(s) URL", redactUserinfo(c.BaseURL))
	}
	return nil
}

// Client calls Kustomer's REST API. It is safe for concurrent use; create one
// per process and share it. It does not retry and does not throttle: callers
// (the loop) own retries and the rate budget, using the classes of its errors
// and [Client.RateLimit].
type Client struct {
	base       string
	baseShown  string // base with any password hidden, for messages
	auth       string
	apiKey     string
	timeout    time.Duration
	hc         *http.Client
	userAgent  string
	onResponse func(RateLimit)
	onRequest  func(RequestInfo)
	now        func() time.Time

	mu sync.Mutex
	rl RateLimit
}

// New returns a Client for cfg, with defaults filled in.
func New(cfg Config) (*Client, error) {
	cfg.BaseURL = strings.TrimRight(cmp.Or(cfg.BaseURL, DefaultBaseURL), "/")
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.UserAgent = cmp.Or(cfg.UserAgent, UserAgentDefault)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 128
		hc = &http.Client{Transport: tr}
	}
	if cfg.WrapTransport != nil {
		wrapped := *hc
		wrapped.Transport = cfg.WrapTransport(hc.Transport)
		hc = &wrapped
	}
	shown := cfg.BaseURL
	if u, err := url.Parse(cfg.BaseURL); err == nil {
		shown = u.Redacted()
	}
	return &Client{
		base:       cfg.BaseURL,
		baseShown:  shown,
		auth:       "Bearer " + cfg.APIKey,
		apiKey:     cfg.APIKey,
		timeout:    cfg.Timeout,
		hc:         hc,
		userAgent:  cfg.UserAgent,
		onResponse: cfg.OnResponse,
		onRequest:  cfg.OnRequest,
		now:        cfg.Now,
	}, nil
}

// Customer is a Kustomer customer as the API returns it under "data".
// Marshalled again it gives the {"id","type","attributes","links"} object the
// workflow hands downstream.
type Customer struct {
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Attributes map[string]any    `json:"attributes"`
	Links      map[string]string `json:"links,omitempty"`
	// RawAttributes is the attributes object as Kustomer sent it, to pass
	// on without encoding it again.
	RawAttributes json.RawMessage `json:"-"`
}

// CloseIdleConnections closes the client's connections that carry no
// request now, as a process that is done with Kustomer should: a connection
// dialled for a request that then went out on another one would otherwise
// stay open, and keep a server's graceful shutdown waiting.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// customerAnswer is Kustomer's answer holding one customer, its attributes
// kept as sent.
type customerAnswer struct {
	Data struct {
		ID         string            `json:"id"`
		Type       string            `json:"type"`
		Attributes json.RawMessage   `json:"attributes"`
		Links      map[string]string `json:"links,omitempty"`
	} `json:"data"`
}

// customerOf decodes the customer a 2xx answer holds, its attributes both
// as a map and as sent. Kustomer always answers with the customer's id: an
// answer without one came from another API.
func (c *Client) customerOf(op, method, path string, status int, a *customerAnswer) (*Customer, error) {
	d := a.Data
	if d.ID == "" {
		return nil, c.foreign(op, method, path, status, "no customer id in the answer")
	}
	cust := &Customer{ID: d.ID, Type: d.Type, Links: d.Links}
	if len(d.Attributes) == 0 || string(d.Attributes) == "null" {
		return cust, nil
	}
	cust.RawAttributes = d.Attributes
	if err := json.Unmarshal(d.Attributes, &cust.Attributes); err != nil {
		return nil, c.foreign(op, method, path, status, "the customer's attributes are not a JSON object")
	}
	return cust, nil
}

// CreateCustomer creates one customer (POST /v1/customers). body is marshalled
// to JSON; a [json.RawMessage] or []byte is sent as is. Kustomer has no
// idempotency key: when the error says [Error.Timeout], look the customer up
// by externalId before creating it again.
func (c *Client) CreateCustomer(ctx context.Context, body any) (*Customer, error) {
	const op = "create"
	b, err := marshalBody(op, body)
	if err != nil {
		return nil, err
	}
	var out customerAnswer
	if err := c.do(ctx, op, http.MethodPost, "/v1/customers", b, &out); err != nil {
		return nil, err
	}
	return c.customerOf(op, http.MethodPost, "/v1/customers", http.StatusCreated, &out)
}

// CustomerByExternalID looks a customer up by externalId
// (GET /v1/customers/externalId={id}). When there is none the error satisfies
// [IsNotFound] (class permanent). Each look-up costs one rate-limit unit.
func (c *Client) CustomerByExternalID(ctx context.Context, externalID string) (*Customer, error) {
	return c.lookup(ctx, "externalId", externalID)
}

// CustomerByEmail looks a customer up by email
// (GET /v1/customers/email={email}). Kustomer answers one customer even when
// several share the email (the sandbox: the oldest). When there is none the
// error satisfies [IsNotFound]. Each look-up costs one rate-limit unit.
func (c *Client) CustomerByEmail(ctx context.Context, email string) (*Customer, error) {
	return c.lookup(ctx, "email", email)
}

// CustomerByPhone looks a customer up by phone
// (GET /v1/customers/phone={phone}); pass the phone as it was stored (E.164,
// such as +14155550100). Otherwise as [Client.CustomerByEmail].
func (c *Client) CustomerByPhone(ctx context.Context, phone string) (*Customer, error) {
	return c.lookup(ctx, "phone", phone)
}

func (c *Client) lookup(ctx context.Context, field, value string) (*Customer, error) {
	const op = "lookup"
	if value == "" {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "empty " + field}
	}
	var out customerAnswer
	// "+" is escaped too: some servers read a literal "+" in a path as a space.
	path := "/v1/customers/" + field + "=" + strings.ReplaceAll(url.PathEscape(value), "+", "%2B")
	if err := c.do(ctx, op, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return c.customerOf(op, http.MethodGet, path, http.StatusOK, &out)
}

// UpdateCustomer updates customer id (PUT /v1/customers/{id}?replace=false)
// and returns it as Kustomer answers it. body is marshalled as for
// [Client.CreateCustomer] and checked against the same closed schema. With
// replace=false the fields sent replace the customer's and the fields not
// sent are kept; an array sent (emails, phones) replaces the customer's whole,
// so send the merged list (at most 10 items). An unknown id gives an error
// that satisfies [IsNotFound]. It costs one rate-limit unit; a retry after an
// unknown outcome ([Error.Timeout]) is safe, as the same update twice gives
// the same customer.
func (c *Client) UpdateCustomer(ctx context.Context, id string, body any) (*Customer, error) {
	const op = "update"
	if id == "" {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "empty customer id"}
	}
	b, err := marshalBody(op, body)
	if err != nil {
		return nil, err
	}
	var out customerAnswer
	path := "/v1/customers/" + url.PathEscape(id) + "?replace=false"
	if err := c.do(ctx, op, http.MethodPut, path, b, &out); err != nil {
		return nil, err
	}
	return c.customerOf(op, http.MethodPut, path, http.StatusOK, &out)
}

// IsNotFound reports whether err is Kustomer's own 404, with its JSON error
// body (for a look-up: no such customer). A 404 from something that is not
// Kustomer's API is systemic, not "not found".
func IsNotFound(err error) bool {
	var ke *Error
	return errors.As(err, &ke) && ke.StatusCode == http.StatusNotFound && ke.Class == ClassPermanent
}

// BaseURL returns the API root the client calls, with any password hidden.
func (c *Client) BaseURL() string { return c.baseShown }

// RateLimit returns the rate-limit headers of the most recent response that
// carried them; the zero RateLimit before any.
func (c *Client) RateLimit() RateLimit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rl
}

func marshalBody(op string, body any) ([]byte, error) {
	switch v := body.(type) {
	case json.RawMessage:
		return v, nil
	case []byte:
		return v, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, &Error{Op: op, Class: ClassPermanent, Message: "cannot encode request body: " + err.Error(), Err: err}
	}
	return b, nil
}

// do sends one request and decodes a 2xx JSON answer into out. Every failure
// is an *Error, except the caller's cancellation, which is ctx.Err() wrapped.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, out any) error {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, c.base+path, rd)
	if err != nil {
		return &Error{Op: op, Class: ClassPermanent, Message: c.scrub("cannot build request: " + err.Error())}
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	sent := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.observe(op, 0, sent)
		return c.transportError(ctx, op, err)
	}
	defer resp.Body.Close()
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	c.observe(op, resp.StatusCode, sent)

	c.noteRateLimit(resp)

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if readErr == nil && !looksLikeJSONObject(data) {
			// An HTML page or plain text where Kustomer answers JSON: the
			// base URL leads somewhere else, so the request did not reach
			// Kustomer's API and created nothing there.
			return c.foreign(op, method, path, resp.StatusCode, excerpt(data))
		}
		if readErr == nil {
			readErr = json.Unmarshal(data, out)
		}
		if readErr != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("kustomer: %s: %w", op, ctx.Err())
			}
			// Kustomer accepted the request but the answer is lost: the
			// outcome is known to Kustomer only, as with a timeout.
			return &Error{
				Op: op, Class: ClassRetryable, StatusCode: resp.StatusCode, Timeout: true,
				Message: c.scrub("unreadable success response: " + readErr.Error()), Err: readErr,
			}
		}
		return nil
	}
	return c.statusError(op, method, path, resp, data)
}

// observe tells OnRequest, if set, of a request of kind op sent at sent.
func (c *Client) observe(op string, status int, sent time.Time) {
	if c.onRequest != nil {
		c.onRequest(RequestInfo{Kind: op, StatusCode: status, Duration: time.Since(sent)})
	}
}

// transportError classifies a failure to get any HTTP response.
func (c *Client) transportError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("kustomer: %s: %w", op, ctx.Err())
	}
	e := &Error{Op: op, Class: ClassRetryable, Err: err}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		e.Timeout = true
		e.Message = fmt.Sprintf("no response within %s", c.timeout)
	case notSent(err):
		e.Message = c.scrub("connection failed: " + err.Error())
	default:
		// Reset, EOF and the like: the request may have been processed.
		e.Timeout = true
		e.Message = c.scrub("connection lost: " + err.Error())
	}
	return e
}

// notSent reports whether err proves the request never left: name resolution
// or dialing failed.
func notSent(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// statusError classifies a non-2xx response.
func (c *Client) statusError(op, method, path string, resp *http.Response, body []byte) *Error {
	code := resp.StatusCode
	e := &Error{Op: op, StatusCode: code}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		e.Class = ClassSystemic
	case code == http.StatusTooManyRequests:
		e.Class = ClassRetryable
		e.RetryAfter = parseRateLimit(resp.Header, code, c.now()).RetryAfter
	case code >= 500:
		e.Class = ClassRetryable
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
		// A gateway timeout means the request reached Kustomer and nobody
		// knows whether it was carried out.
		e.Timeout = code == http.StatusGatewayTimeout
	case misdirected(method, code, body):
		parseErrorBody(e, body)
		f := c.foreign(op, method, path, code, strings.TrimPrefix(e.Message, statusText(code)+": "))
		f.Code = c.scrub(e.Code)
		return f
	default:
		e.Class = ClassPermanent
	}
	parseErrorBody(e, body)
	e.Message = c.scrub(e.Message)
	e.Code = c.scrub(e.Code)
	e.Pointer = c.scrub(e.Pointer)
	return e
}

// misdirected reports whether a 4xx answer shows that the request did not
// reach Kustomer's API: Kustomer serves POST /v1/customers and
// /v1/customers/bulk, so a 404 there means a wrong base URL, and it answers
// every error with its JSON error body, so a 4xx without one came from
// something else (a web server, a proxy, another API). Answers about the
// request's size (413, 414, 431) stay with the request, whoever sent them;
// 401, 403 and 429 are classified before this.
func misdirected(method string, code int, body []byte) bool {
	switch {
	case code < 400 || code >= 500:
		return false
	case code == http.StatusNotFound && method == http.MethodPost:
		return true
	case code == http.StatusRequestEntityTooLarge || code == http.StatusRequestURITooLong || code == http.StatusRequestHeaderFieldsTooLarge:
		return false
	}
	return !isErrorBody(body)
}

// foreign is the systemic error of an answer that did not come from
// Kustomer's API: every request would get it, so the workflow pauses until
// the base URL is fixed, instead of failing each lead.
func (c *Client) foreign(op, method, path string, code int, detail string) *Error {
	if i := strings.IndexByte(path, '='); i >= 0 {
		path = path[:i+1] + "…" // the looked-up value is the lead's, not the deployment's
	}
	msg := fmt.Sprintf("%s does not answer as Kustomer's API (check the base URL): %s %s answered %s", c.baseShown, method, path, statusText(code))
	if detail != "" && !strings.EqualFold(detail, statusText(code)) {
		msg += ": " + detail
	}
	return &Error{Op: op, Class: ClassSystemic, StatusCode: code, Message: c.scrub(msg)}
}

// looksLikeJSONObject reports whether b starts as a JSON object does.
func looksLikeJSONObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// scrub removes the API key from s, in case a server or a library echoes it.
func (c *Client) scrub(s string) string {
	if c.apiKey == "" {
		return s
	}
	return strings.ReplaceAll(s, c.apiKey, "[redacted]")
}

func (c *Client) noteRateLimit(resp *http.Response) {
	rl, ok := rateLimitOf(resp.Header, resp.StatusCode, c.now())
	if !ok {
		return
	}
	c.mu.Lock()
	c.rl = rl
	c.mu.Unlock()
	if c.onResponse != nil {
		c.onResponse(rl)
	}
}
