package admin_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/loopback"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// started reports fixed workflows, as a started worker would.
type started []worker.WorkflowState

func (s started) Workflows() []worker.WorkflowState { return s }

// startServer starts an admin server over a real embedded NATS server.
func startServer(t *testing.T, token string) string {
	t.Helper()
	base, _ := startServerJS(t, token)
	return base
}

// startServerJS is startServer that also returns the server's JetStream.
func startServerJS(t *testing.T, token string) (string, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	s, err := admin.New(admin.Config{Addr: "127.0.0.1:0", Token: token, Conn: nc, JetStream: js, Workflows: started{}})
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { require.NoError(t, s.Shutdown(t.Context())) })
	return "http://" + s.Addr(), js
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values, header http.Header) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h // the client sends req.Host, not the header
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func noRedirects() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestMetricsAnswerOnlyGETAndHealthzIsAlways200(t *testing.T) {
	t.Parallel()
	base := startServer(t, "s3cret-token")
	c := noRedirects()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"POST", "/metrics", 405},
		{"DELETE", "/metrics", 405},
		{"GET", "/metrics/x", 303}, // not a probe: to the login page
		{"GET", "/healthz", 200},
		{"POST", "/healthz", 405},
		{"GET", "/readyz", 200},
		{"GET", "/debug/pprof/", 303},
	} {
		resp, _ := do(t, c, tc.method, base+tc.path, nil, nil)
		require.Equal(t, tc.want, resp.StatusCode, "%s %s", tc.method, tc.path)
	}
	resp, body := do(t, c, "GET", base+"/metrics", nil, nil)
	require.Equal(t, 200, resp.StatusCode)
	require.Contains(t, body, "go_goroutines")
}

func TestANonLoopbackAdminAddressNeedsAToken(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	for _, addr := range []string{":9090", "0.0.0.0:9090", "10.1.2.3:9090"} {
		_, err := admin.New(admin.Config{Addr: addr, Conn: nc, JetStream: js, Workflows: started{}})
		require.ErrorContains(t, err, "admin: --admin-addr "+addr+" listens beyond loopback: set an admin token", addr)
	}
	for _, addr := range []string{"127.0.0.1:9090", "localhost:0", "[::1]:9090"} {
		require.True(t, loopback.Addr(addr), addr)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func TestWritesNeedTheTokenAndTheFormsCSRFToken(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	base := startServer(t, token)
	c := noRedirects()
	retry := base + "/dead-letters/retry"
	form := url.Values{"ids": {"1"}}

	// Without the token: pages send to the login, writes and /status are refused.
	resp, _ := do(t, c, "GET", base+"/dead-letters", nil, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/login?next=%2Fdead-letters", resp.Header.Get("Location"))
	resp, _ = do(t, c, "GET", base+"/status", nil, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = do(t, c, "POST", retry, form, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = do(t, c, "POST", retry, form, http.Header{"Authorization": {"Bearer wrong"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// A wrong token does not log in; the right one does, with a cookie
	// that is not the token.
	resp, page := do(t, c, "GET", base+"/login", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	csrf := csrfRE.FindStringSubmatch(page)[1]
	resp, _ = do(t, c, "POST", base+"/login", url.Values{"token": {"nope"}, "csrf": {csrf}}, nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = do(t, c, "POST", base+"/login", url.Values{"token": {token}, "next": {"/dead-letters"}, "csrf": {csrf}}, nil)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/dead-letters", resp.Header.Get("Location"))
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		require.NotContains(t, ck.Value, token)
	}

	// Logged in: a page renders and never shows the token.
	resp, page = do(t, c, "GET", base+"/dead-letters", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotContains(t, page, token)

	// A write without the form's CSRF token, with another browser's, or
	// from another site is refused; nothing is replayed.
	resp, _ = do(t, c, "POST", retry, form, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _ = do(t, c, "POST", retry, url.Values{"ids": {"1"}, "csrf": {strings.Repeat("0", len(csrf))}}, nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _ = do(t, c, "POST", retry, url.Values{"ids": {"1"}, "csrf": {csrf}}, http.Header{"Sec-Fetch-Site": {"cross-site"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	resp, _ = do(t, c, "POST", retry, url.Values{"ids": {"1"}, "csrf": {csrf}}, http.Header{"Origin": {"https://evil.example"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	// With both, the write goes through (no dead-letter stream yet: 503).
	resp, _ = do(t, c, "POST", retry, url.Values{"ids": {"1"}, "csrf": {csrf}}, nil)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	// An API client with the bearer token reads /status.
	resp, _ = do(t, noRedirects(), "GET", base+"/status", nil, http.Header{"Authorization": {"Bearer " + token}})
	require.NotEqual(t, http.StatusUnauthorized, resp.StatusCode)
}
