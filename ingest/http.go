package ingest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/subject"
	"github.com/kustomer-sync/kustomer-sync/tracing"

	"github.com/kustomer-sync/kustomer-sync/loopback"
)

// Defaults of [HandlerConfig].
const (
	// MaxBodyBytesDefault is the largest request body accepted; larger ones
	// are answered 413 and nothing of them is published.
	MaxBodyBytesDefault = 4 << 20
	// HTTPTimeoutDefault bounds waiting for JetStream to store the events of
	// one request.
	HTTPTimeoutDefault = 10 * time.Second
	// RetryAfterDefault is the Retry-After of a 503.
	RetryAfterDefault = 5 * time.Second
	// HTTPSubjectToken replaces the wildcards of a workflow's subject filter
	// to make the subject events are published to: "leads.>" gives
	// "leads.http".
	HTTPSubjectToken = "http"
	// MaxIdempotencyKeyLen bounds the Idempotency-Key header, and the id
	// field of a request without one: each becomes a Nats-Msg-Id.
	MaxIdempotencyKeyLen = 200
)

// HandlerConfig configures [NewHandler]. JS and Subjects are required.
type HandlerConfig struct {
	JS jetstream.JetStream
	// Subjects returns the subject filter of the workflow named, and whether
	// there is one. It is called on every request, so a reloaded config is
	// seen at once. Must be safe for concurrent use.
	Subjects func(workflow string) (filter string, ok bool)
	// Workflows, when set, lists the workflows that exist, for the 404 of
	// one that does not. Must be safe for concurrent use.
	Workflows func() []string
	// Token, when set, is required as "Authorization: Bearer <Token>".
	// Without it, only requests to a loopback name or address (Host) are
	// served, so a page whose name resolves to 127.0.0.1 cannot post.
	Token string
	// HMACSecret, when set, requires "X-Signature: sha256=<hex>", the
	// HMAC-SHA256 of the body with this secret, as webhook senders sign.
	HMACSecret []byte
	// MaxBytes bounds a request's body; default MaxBodyBytesDefault.
	MaxBytes int64
	// IDField is the event field used as Nats-Msg-Id when the request has no
	// Idempotency-Key; default "id" (events without it get a content hash).
	IDField string
	// Timeout bounds storing one request's events; default HTTPTimeoutDefault.
	Timeout time.Duration
	// KeyBucket is the KV bucket remembering each Idempotency-Key with a
	// digest of its request, so a key reused with another body is refused
	// (409); default KeyBucketDefault. KeyWindow is how long a key is
	// remembered; default the duplicate window of the stream the first
	// keyed request goes to (else KeyWindowDefault).
	KeyBucket string
	KeyWindow time.Duration
	// Logger gets one event per refused or failed request; never a secret.
	Logger zerolog.Logger
	// TracerProvider, when set, traces each request (otelhttp, continuing
	// the request's own W3C trace context, read strictly: see
	// tracing.Propagator), and the events it publishes carry the trace.
	TracerProvider trace.TracerProvider
}

// Handler serves POST /v1/events/{workflow}: it publishes the body's events
// (a JSON object, a JSON array, or JSON lines) to the workflow's subject and
// answers 202 with their stream sequences only once JetStream stored them.
// Safe for concurrent use.
type Handler struct {
	cfg   HandlerConfig
	mux   *http.ServeMux
	serve http.Handler // mux, traced when cfg.TracerProvider is set

	keysMu sync.Mutex
	keys   jetstream.KeyValue // opened at the first request with a key
}

// NewHandler checks cfg and returns the handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("ingest: HandlerConfig.JS is required")
	case cfg.Subjects == nil:
		return nil, errors.New("ingest: HandlerConfig.Subjects is required")
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("ingest: negative MaxBytes %d", cfg.MaxBytes)
	case cfg.KeyWindow < 0:
		return nil, fmt.Errorf("ingest: negative KeyWindow %s", cfg.KeyWindow)
	}
	cfg.KeyBucket = cmp.Or(cfg.KeyBucket, KeyBucketDefault)
	cfg.MaxBytes = cmp.Or(cfg.MaxBytes, MaxBodyBytesDefault)
	cfg.IDField = cmp.Or(cfg.IDField, "id")
	cfg.Timeout = cmp.Or(cfg.Timeout, HTTPTimeoutDefault)
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST /v1/events/{workflow}", h.post)
	h.serve = h.mux
	if cfg.TracerProvider != nil {
		h.serve = otelhttp.NewHandler(h.mux, "ingest", otelhttp.WithTracerProvider(cfg.TracerProvider),
			otelhttp.WithPropagators(tracing.Propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " /v1/events/{workflow}" }))
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve.ServeHTTP(w, r) }

// Accepted is the body of a 202.
type Accepted struct {
	Workflow   string   `json:"workflow"`
	Subject    string   `json:"subject"`
	Published  int      `json:"published"`  // stored as new events
	Duplicates int      `json:"duplicates"` // stored before (a retried request)
	Sequences  []uint64 `json:"sequences"`  // each event's stream sequence, in the body's order
}

// httpError is a refusal: its status and what to tell the sender.
type httpError struct {
	status int
	msg    string
}

func (h *Handler) post(w http.ResponseWriter, r *http.Request) {
	wf := r.PathValue("workflow")
	acc, herr := h.accept(w, r, wf)
	if herr != nil {
		ev := h.cfg.Logger.Info()
		if herr.status >= 500 {
			ev = h.cfg.Logger.Warn()
		}
		ev.Int("status", herr.status).Str("remote", r.RemoteAddr).Msg(herr.msg)
		switch herr.status {
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", `Bearer realm="kustomer-sync ingest"`)
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfterDefault/time.Second)))
		}
		writeJSON(w, herr.status, map[string]string{"error": herr.msg})
		return
	}
	writeJSON(w, http.StatusAccepted, acc)
}

// accept authenticates, reads and publishes one request.
func (h *Handler) accept(w http.ResponseWriter, r *http.Request, wf string) (*Accepted, *httpError) {
	if msg := h.crossOrigin(r); msg != "" {
		return nil, &httpError{http.StatusForbidden, msg}
	}
	if h.cfg.Token != "" && !h.tokenOK(r.Header.Get("Authorization")) {
		return nil, &httpError{http.StatusUnauthorized, "ingest: missing or wrong bearer token (Authorization: Bearer <token>)"}
	}
	filter, ok := h.cfg.Subjects(wf)
	if !ok {
		msg := fmt.Sprintf("ingest: no workflow %q", clip(wf, 64))
		if h.cfg.Workflows != nil {
			if names := h.cfg.Workflows(); len(names) > 0 {
				msg += "; the workflows are: " + strings.Join(names, ", ")
			}
		}
		return nil, &httpError{http.StatusNotFound, msg}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		// A browser sends a cross-origin POST of another site's page
		// without asking first only with a form's content types.
		return nil, &httpError{http.StatusUnsupportedMediaType, "ingest: Content-Type must be application/json (for a JSON object, a JSON array or JSON lines)"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("ingest: the body is over %d bytes (--ingest-max-bytes): send fewer events per request", h.cfg.MaxBytes)}
	case err != nil:
		return nil, &httpError{http.StatusBadRequest, "ingest: reading the body: " + err.Error()}
	}
	if len(h.cfg.HMACSecret) > 0 {
		if msg := h.signatureProblem(r.Header.Get("X-Signature"), body); msg != "" {
			return nil, &httpError{http.StatusUnauthorized, msg}
		}
	}
	subj, err := concreteSubject(filter, r.URL.Query().Get("subject"))
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, err.Error()}
	}
	evs, err := Reader{Name: "body", Format: FormatJSON, IDField: h.cfg.IDField}.ReadAll(bytes.NewReader(body))
	if err != nil {
		return nil, &httpError{http.StatusBadRequest, err.Error() + "; nothing was published"}
	}
	if len(evs) == 0 {
		return nil, &httpError{http.StatusBadRequest, "ingest: body: no events (want a JSON object, a JSON array of objects, or JSON lines)"}
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		if err := checkKey(key); err != nil {
			return nil, &httpError{http.StatusBadRequest, err.Error()}
		}
		// Scoped to the workflow, so one key used for two workflows on the
		// same stream is not taken for a retry; numbered in a batch.
		for i := range evs {
			evs[i].ID = "http:" + wf + ":" + key
			if len(evs) > 1 {
				evs[i].ID += "#" + strconv.Itoa(i+1)
			}
		}
	} else {
		// The id field becomes the Nats-Msg-Id: bounded as the key is.
		for _, ev := range evs {
			if len(ev.ID) > MaxIdempotencyKeyLen {
				return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("ingest: body: line %d: field %q is over %d characters (it becomes the event's Nats-Msg-Id): shorten it, or send an Idempotency-Key; nothing was published", ev.Line, h.cfg.IDField, MaxIdempotencyKeyLen)}
			}
		}
	}
	nc := h.cfg.JS.Conn()
	if !nc.IsConnected() {
		return nil, &httpError{http.StatusServiceUnavailable, "ingest: NATS is not connected; retry later"}
	}
	for _, ev := range evs {
		// Its headers count too; they are far below JetStream's 64 KiB
		// limit on headers, as the id is bounded.
		size, max := msgSize(subj, ev), nc.MaxPayload()
		if h.cfg.TracerProvider != nil {
			size += tracing.MaxHeaderBytes // the trace context it will carry
		}
		if int64(size) > max {
			return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("ingest: body: line %d: an event of %d bytes with its headers is over the NATS server's limit of %d; nothing was published", ev.Line, size, max)}
		}
	}
	if key != "" {
		ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
		err := h.claimKey(ctx, wf, key, subj, evs)
		cancel()
		switch {
		case errors.Is(err, errKeyReused):
			return nil, &httpError{http.StatusConflict, fmt.Sprintf("ingest: Idempotency-Key %q was sent before with another body (or ?subject=): a retry must repeat the request as it was; send a new key for a new request; nothing was published", key)}
		case err != nil:
			return nil, &httpError{http.StatusServiceUnavailable, err.Error() + "; nothing was published, retry the same request"}
		}
	}
	res, err := Publisher{JS: h.cfg.JS, Timeout: h.cfg.Timeout}.Publish(r.Context(), subj, evs)
	if err != nil {
		stored := res.Published + res.Duplicates
		if neverStored(err) {
			// The stream's own limit (max_msg_size), or a server whose
			// limit shrank: the same request would fail again.
			return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("%s; %d of %d event(s) stored, the others cannot be stored as they are: send smaller events", err, stored, len(evs))}
		}
		// Events stored before the failure are de-duplicated when the sender
		// retries with the same request.
		return nil, &httpError{http.StatusServiceUnavailable, fmt.Sprintf("%s; %d of %d event(s) stored, retry the same request", err, stored, len(evs))}
	}
	return &Accepted{Workflow: wf, Subject: subj, Published: res.Published, Duplicates: res.Duplicates, Sequences: res.Sequences}, nil
}

// neverStored reports whether err, a publish failure, says JetStream can
// never store the event as it is.
func neverStored(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return true
		}
	}
	return errors.Is(err, nats.ErrMaxPayload)
}

// crossOrigin says why r is refused as a browser's request from another
// site ("" if it is not): with Sec-Fetch-Site other than same-origin or
// none, or an Origin other than this server's (http or https, and the
// request's Host). Without a token, anyone on this machine may post, so
// the Host must be a loopback name or address too: a page whose own name
// resolves to 127.0.0.1 (DNS rebinding) is same-origin for the browser.
func (h *Handler) crossOrigin(r *http.Request) string {
	const refused = "ingest: a browser's request from another site is refused"
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return refused + " (Sec-Fetch-Site: " + clip(site, 32) + ")"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" || !strings.EqualFold(u.Host, r.Host) {
			return refused + " (Origin " + clip(origin, 64) + " is not this server's)"
		}
	}
	if h.cfg.Token == "" && !loopback.Host(r.Host) {
		return "ingest: without a token only loopback names are served (Host " + clip(r.Host, 64) + "); use 127.0.0.1 or localhost, or set a token"
	}
	return ""
}

// tokenOK compares the bearer token in constant time (of digests, so the
// token's length does not show either). The scheme's name is
// case-insensitive (RFC 7235): "bearer" is Bearer.
func (h *Handler) tokenOK(auth string) bool {
	const scheme = "Bearer "
	if len(auth) < len(scheme) || !strings.EqualFold(auth[:len(scheme)], scheme) {
		return false
	}
	got := auth[len(scheme):]
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(h.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// signatureProblem says what is wrong with sig, the X-Signature header, for
// body; "" when it is the body's HMAC-SHA256 with the secret.
func (h *Handler) signatureProblem(sig string, body []byte) string {
	hexSum, ok := strings.CutPrefix(strings.TrimSpace(sig), "sha256=")
	if !ok {
		return "ingest: missing X-Signature: want sha256=<hex HMAC-SHA256 of the body>"
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return "ingest: X-Signature is not sha256=<hex>"
	}
	mac := hmac.New(sha256.New, h.cfg.HMACSecret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "ingest: X-Signature does not match the body"
	}
	return ""
}

// concreteSubject is the subject to publish to for a workflow with subject
// filter filter: requested, when given and inside the filter; otherwise the
// filter with each wildcard replaced by HTTPSubjectToken.
func concreteSubject(filter, requested string) (string, error) {
	if requested != "" {
		if !literalSubject(requested) || !subject.Covers(filter, requested) {
			return "", fmt.Errorf("ingest: ?subject=%q is not a subject the workflow's filter %s captures", clip(requested, 64), filter)
		}
		return requested, nil
	}
	tokens := strings.Split(filter, ".")
	for i, t := range tokens {
		if t == "*" || t == ">" {
			tokens[i] = HTTPSubjectToken
		}
	}
	return strings.Join(tokens, "."), nil
}

// literalSubject reports whether s is a NATS subject without wildcards.
func literalSubject(s string) bool {
	if len(s) > 255 {
		return false
	}
	for _, t := range strings.Split(s, ".") {
		if t == "" || t == "*" || t == ">" || strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return false
		}
	}
	return true
}

func checkKey(key string) error {
	if len(key) > MaxIdempotencyKeyLen {
		return fmt.Errorf("ingest: Idempotency-Key is over %d characters", MaxIdempotencyKeyLen)
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return errors.New("ingest: Idempotency-Key must be printable ASCII without spaces")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Not escaped for HTML: the body is JSON for a program or a person
	// reading curl's output, never markup ("Bearer <token>", not \u003c).
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
