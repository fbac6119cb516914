package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/eventid"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

const (
	testToken  = "tok-3b9e1f0c7d"
	testSecret = "whsec-8a2c4e6f"
)

// ingestEnv is an HTTP ingest server on an embedded NATS server with a
// LEADS stream on leads.>, for the workflows "signup" (leads.>) and "forms"
// (forms.web).
type ingestEnv struct {
	t    testing.TB
	srv  *natstest.Server
	js   jetstream.JetStream
	st   jetstream.Stream
	http *httptest.Server
}

func newIngestEnv(t testing.TB, adjust func(*HandlerConfig)) *ingestEnv {
	t.Helper()
	return newIngestEnvOn(t, natstest.Start(t), jetstream.StreamConfig{}, adjust)
}

// newIngestEnvOn is newIngestEnv on srv, with the LEADS stream's limits of
// limits.
func newIngestEnvOn(t testing.TB, srv *natstest.Server, limits jetstream.StreamConfig, adjust func(*HandlerConfig)) *ingestEnv {
	t.Helper()
	_, js := srv.Connect(t)
	limits.Name, limits.Subjects, limits.Duplicates = "LEADS", []string{"leads.>", "forms.web"}, time.Hour
	st, err := js.CreateStream(context.Background(), limits)
	require.NoError(t, err)
	cfg := HandlerConfig{
		JS: js,
		Subjects: func(wf string) (string, bool) {
			f, ok := map[string]string{"signup": "leads.>", "forms": "forms.web"}[wf]
			return f, ok
		},
		Token:   testToken,
		Timeout: 2 * time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	h, err := NewHandler(cfg)
	require.NoError(t, err)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &ingestEnv{t: t, srv: srv, js: js, st: st, http: hs}
}

// post sends body to path as application/json with the test token and the
// headers given (name, value pairs; "Host" sets the request's host; an
// empty value removes the header) and returns the status and the decoded
// JSON answer.
func (e *ingestEnv) post(path, body string, headers ...string) (int, map[string]any, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.http.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		switch {
		case headers[i] == "Host":
			req.Host = headers[i+1]
		case headers[i+1] == "":
			req.Header.Del(headers[i])
		default:
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := e.http.Client().Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	var out map[string]any
	require.NoError(e.t, json.Unmarshal(data, &out), "%s", data)
	return resp.StatusCode, out, resp.Header
}

func (e *ingestEnv) stored() uint64 {
	e.t.Helper()
	info, err := e.st.Info(context.Background())
	require.NoError(e.t, err)
	return info.State.Msgs
}

func sign(body string) string {
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestARetriedPOSTWithTheSameIdempotencyKeyPublishesOnce(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	body := `{"email":"ann@example.com","name":"Ann"}`
	code, first, _ := e.post("/v1/events/signup", body, "Idempotency-Key", "form-42")
	require.Equal(t, http.StatusAccepted, code, first)
	require.Equal(t, "leads.http", first["subject"], "the wildcard of leads.> is replaced by http")
	require.EqualValues(t, 1, first["published"])
	code, again, _ := e.post("/v1/events/signup", body, "Idempotency-Key", "form-42")
	require.Equal(t, http.StatusAccepted, code, again)
	require.EqualValues(t, 0, again["published"])
	require.EqualValues(t, 1, again["duplicates"])
	require.Equal(t, first["sequences"], again["sequences"], "the retry is told where the first one was stored")
	require.EqualValues(t, 1, e.stored())

	msg, err := e.st.GetMsg(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, eventid.MsgID("leads.http", "http:signup:form-42", msg.Data), msg.Header.Get("Nats-Msg-Id"))
	require.JSONEq(t, body, string(msg.Data))
}

func TestABatchIsStoredWholeAndReportsEachSequence(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	ndjson := "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}\n"
	code, out, _ := e.post("/v1/events/signup?subject=leads.partner.acme", ndjson)
	require.Equal(t, http.StatusAccepted, code, out)
	require.Equal(t, "leads.partner.acme", out["subject"])
	require.Equal(t, []any{1.0, 2.0, 3.0}, out["sequences"])
	// Without an Idempotency-Key, the events' ids de-duplicate a retry.
	code, out, _ = e.post("/v1/events/signup?subject=leads.partner.acme", `[{"id":"a"},{"id":"b"},{"id":"c"}]`)
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 3, out["duplicates"])
	require.EqualValues(t, 3, e.stored())

	code, out, _ = e.post("/v1/events/signup?subject=forms.web", `{"id":"d"}`)
	require.Equal(t, http.StatusBadRequest, code, "a subject outside the workflow's filter is refused")
	require.Contains(t, out["error"], `not a subject the workflow's filter leads.> captures`)
}

func TestABatchWithOneBadLineIsRefusedWholeNamingTheLine(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	code, out, _ := e.post("/v1/events/signup", "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\": oops}\n{\"id\":\"d\"}\n", "Idempotency-Key", "batch-1")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, out["error"], "line 3")
	require.Contains(t, out["error"], "nothing was published")
	require.EqualValues(t, 0, e.stored())
}

func TestABodyOverTheLimitGets413AndNothingIsPublished(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, func(c *HandlerConfig) { c.MaxBytes = 100 })
	body := `[` + strings.Repeat(`{"name":"Ann"},`, 10) + `{"name":"Bob"}]`
	code, out, _ := e.post("/v1/events/signup", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, out)
	require.EqualValues(t, 0, e.stored())
}

func TestAWrongTokenOrSignatureIsRefused(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, func(c *HandlerConfig) { c.HMACSecret = []byte(testSecret) })
	body := `{"id":"a"}`

	req, err := http.NewRequest(http.MethodPost, e.http.URL+"/v1/events/signup", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer not-the-token")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", sign(body))
	resp, err := e.http.Client().Do(req)
	require.NoError(t, err)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.NotContains(t, string(msg), testToken)

	code, out, _ := e.post("/v1/events/nope", body, "X-Signature", sign(body))
	require.Equal(t, http.StatusNotFound, code, "an unknown workflow, once authenticated")
	require.Contains(t, out["error"], `no workflow "nope"`)

	code, out, _ = e.post("/v1/events/signup", body, "X-Signature", sign(body+" "))
	require.Equal(t, http.StatusUnauthorized, code)
	require.Equal(t, "ingest: X-Signature does not match the body", out["error"])
	code, _, _ = e.post("/v1/events/signup", body)
	require.Equal(t, http.StatusUnauthorized, code, "a missing signature")
	require.EqualValues(t, 0, e.stored())

	code, out, _ = e.post("/v1/events/signup", body, "X-Signature", sign(body))
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 1, e.stored())
}

func TestWhileJetStreamIsDownTheAnswerIs503WithRetryAfter(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	code, out, h := e.post("/v1/events/signup", `{"id":"a"}`)
	require.Equal(t, http.StatusServiceUnavailable, code, out)
	require.Equal(t, "5", h.Get("Retry-After"))
}

func TestAnIDFieldOverTheIdempotencyKeyLimitIsRefusedNamingTheField(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	longest := strings.Repeat("i", MaxIdempotencyKeyLen)
	code, out, _ := e.post("/v1/events/signup", `{"id":"`+longest+`"}`)
	require.Equal(t, http.StatusAccepted, code, out)

	for _, id := range []string{longest + "i", strings.Repeat("i", 70<<10)} { // the second is over JetStream's 64 KiB of headers
		code, out, _ = e.post("/v1/events/signup", `{"id":"a"}`+"\n"+`{"id":"`+id+`"}`)
		require.Equal(t, http.StatusBadRequest, code, "not 503: a retry cannot help")
		require.Equal(t, fmt.Sprintf(`ingest: body: line 2: field "id" is over %d characters (it becomes the event's Nats-Msg-Id): shorten it, or send an Idempotency-Key; nothing was published`, MaxIdempotencyKeyLen), out["error"])
	}
	require.EqualValues(t, 1, e.stored())

	// With an Idempotency-Key the id field is no Nats-Msg-Id: any length.
	code, out, _ = e.post("/v1/events/signup", `{"id":"`+strings.Repeat("i", 70<<10)+`"}`, "Idempotency-Key", "form-9")
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 2, e.stored())
}

func TestAnEventThatCanNeverBeStoredIs413NotARetry(t *testing.T) {
	t.Parallel()
	const limit = 8 << 10
	srv := natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) { o.MaxPayload = limit })
	e := newIngestEnvOn(t, srv, jetstream.StreamConfig{MaxMsgSize: 4 << 10}, nil)
	event := func(size int) string { // compact JSON of size bytes with an id
		return `{"id":"lead-1","x":"` + strings.Repeat("x", size-len(`{"id":"lead-1","x":""}`)) + `"}`
	}

	// Under the server's limit alone, over it with the Nats-Msg-Id header.
	code, out, _ := e.post("/v1/events/signup", event(limit-10))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, out)
	require.Contains(t, out["error"], "with its headers is over the NATS server's limit of 8192; nothing was published")

	// Under the server's limit, over the stream's max_msg_size.
	code, out, _ = e.post("/v1/events/signup", event(5<<10))
	require.Equal(t, http.StatusRequestEntityTooLarge, code, out)
	require.Contains(t, out["error"], "0 of 1 event(s) stored, the others cannot be stored as they are")
	require.EqualValues(t, 0, e.stored())

	code, out, _ = e.post("/v1/events/signup", event(3<<10))
	require.Equal(t, http.StatusAccepted, code, out)
}

func TestABrowserPageOfAnotherSiteCannotPostWithoutAToken(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, func(c *HandlerConfig) { c.Token = "" })
	own := strings.TrimPrefix(e.http.URL, "http://")
	rebound := "evil.example:" + own[strings.LastIndexByte(own, ':')+1:]
	body := `{"id":"a"}`
	for name, headers := range map[string][]string{
		"another site's Origin":       {"Origin", "https://evil.example"},
		"another port of this host":   {"Origin", "http://127.0.0.1:1"},
		"a sandboxed page":            {"Origin", "null"},
		"a cross-site fetch":          {"Sec-Fetch-Site", "cross-site"},
		"a sibling site":              {"Sec-Fetch-Site", "same-site"},
		"a name rebound to 127.0.0.1": {"Host", rebound, "Origin", "http://" + rebound, "Sec-Fetch-Site", "same-origin"},
	} {
		code, out, _ := e.post("/v1/events/signup", body, headers...)
		require.Equal(t, http.StatusForbidden, code, "%s: %v", name, out)
	}
	for name, ct := range map[string]string{
		"a form's":       "text/plain",
		"a form's too":   "application/x-www-form-urlencoded",
		"none":           "",
		"a bad one":      "application/json; =",
		"JSON's, nearly": "application/jsonl",
	} {
		code, out, _ := e.post("/v1/events/signup", body, "Content-Type", ct)
		require.Equal(t, http.StatusUnsupportedMediaType, code, "%s: %v", name, out)
		require.Equal(t, "ingest: Content-Type must be application/json (for a JSON object, a JSON array or JSON lines)", out["error"])
	}
	require.EqualValues(t, 0, e.stored())

	// The server's own pages, and anything that is not a browser.
	code, out, _ := e.post("/v1/events/signup", body, "Origin", "http://"+own, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusAccepted, code, out)
	code, out, _ = e.post("/v1/events/signup", `{"id":"b"}`, "Content-Type", "Application/JSON; charset=utf-8", "Host", "localhost")
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 2, e.stored())
}

// BenchmarkHTTPIngest posts events=1 and events=100 per request to embedded
// NATS from 8 concurrent senders and reports requests/s, events/s and the
// p99 latency of a request.
func BenchmarkHTTPIngest(b *testing.B) {
	for _, per := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", per), func(b *testing.B) {
			e := newIngestEnv(b, nil)
			var (
				mu   sync.Mutex
				lats []time.Duration
				n    int
			)
			b.SetParallelism(4) // × GOMAXPROCS senders
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				var sb strings.Builder
				for pb.Next() {
					mu.Lock()
					n++
					req := n
					mu.Unlock()
					sb.Reset()
					for i := range per {
						fmt.Fprintf(&sb, "{\"id\":\"r%d-%d\",\"email\":\"lead%d@example.com\"}\n", req, i, i)
					}
					hr, _ := http.NewRequest(http.MethodPost, e.http.URL+"/v1/events/signup", strings.NewReader(sb.String()))
					hr.Header.Set("Authorization", "Bearer "+testToken)
					hr.Header.Set("Content-Type", "application/json")
					t0 := time.Now()
					resp, err := e.http.Client().Do(hr)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lats)
			if len(lats) > 0 {
				b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(len(lats)*per)/elapsed.Seconds(), "events/s")
				b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-ms")
			}
		})
	}
}

// The scheme of Authorization is case-insensitive (RFC 7235): "bearer"
// and "BEARER" carry the token as "Bearer" does; another scheme does not.
func TestTheBearerSchemeIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	for i, scheme := range []string{"bearer ", "BEARER ", "Bearer "} {
		code, out, _ := e.post("/v1/events/signup", fmt.Sprintf(`{"id":"case-%d"}`, i), "Authorization", scheme+testToken)
		require.Equal(t, http.StatusAccepted, code, "%q: %v", scheme, out)
	}
	code, _, _ := e.post("/v1/events/signup", `{"id":"basic"}`, "Authorization", "Basic "+testToken)
	require.Equal(t, http.StatusUnauthorized, code)
	code, _, _ = e.post("/v1/events/signup", `{"id":"short"}`, "Authorization", "bear")
	require.Equal(t, http.StatusUnauthorized, code)
}

// The same id sent to two workflows is stored for each.
func TestTheSameIDSentToTwoWorkflowsIsStoredForEach(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	body := `{"id":"l-1","name":"Ann"}`
	for _, wf := range []string{"signup", "forms"} {
		code, out, _ := e.post("/v1/events/"+wf, body)
		require.Equal(t, http.StatusAccepted, code, out)
		require.EqualValues(t, 1, out["published"], "%s: %v", wf, out)
	}
	// And with a changed body, the same id is a new event.
	code, out, _ := e.post("/v1/events/signup", `{"id":"l-1","name":"Ann Lee"}`)
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 1, out["published"], "%v", out)
	require.EqualValues(t, 3, e.stored())
}

// An Idempotency-Key sent again with another body is refused with 409
// naming the key, through any replica (the keys are in a KV bucket every
// replica shares); the same request again is a duplicate.
func TestAnIdempotencyKeyReusedWithAnotherBodyIsAConflict(t *testing.T) {
	t.Parallel()
	e := newIngestEnv(t, nil)
	code, out, _ := e.post("/v1/events/signup", `{"name":"Ann"}`, "Idempotency-Key", "form-9")
	require.Equal(t, http.StatusAccepted, code, out)

	// Another replica: its own handler on the same NATS.
	_, js := e.srv.Connect(t)
	other, err := NewHandler(HandlerConfig{JS: js, Subjects: func(string) (string, bool) { return "leads.>", true }, Token: testToken})
	require.NoError(t, err)
	hs := httptest.NewServer(other)
	t.Cleanup(hs.Close)
	for name, url := range map[string]string{"this replica": e.http.URL, "another replica": hs.URL} {
		for _, body := range []string{`{"name":"Bob"}`, `[{"name":"Ann"},{"name":"Bob"}]`} {
			req, err := http.NewRequest(http.MethodPost, url+"/v1/events/signup", strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "form-9")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var got map[string]string
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			resp.Body.Close()
			require.Equal(t, http.StatusConflict, resp.StatusCode, "%s, %s: %v", name, body, got)
			require.Contains(t, got["error"], `Idempotency-Key "form-9"`)
		}
	}
	code, out, _ = e.post("/v1/events/signup", `{"name":"Ann"}`, "Idempotency-Key", "form-9", "X-Request", "retry")
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 1, out["duplicates"], "the same request again is a duplicate")
	// Another workflow may use the same key for its own request.
	code, out, _ = e.post("/v1/events/forms", `{"name":"Bob"}`, "Idempotency-Key", "form-9")
	require.Equal(t, http.StatusAccepted, code, out)
	require.EqualValues(t, 2, e.stored())
}
