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

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/worker/natstest"
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
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>", "forms.web"}, Duplicates: time.Hour})
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

// post sends body to path with the test token and the headers given (name,
// value pairs) and returns the status and the decoded JSON answer.
func (e *ingestEnv) post(path, body string, headers ...string) (int, map[string]any, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.http.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+testToken)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
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
	require.Equal(t, "http:signup:form-42", msg.Header.Get("Nats-Msg-Id"))
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
