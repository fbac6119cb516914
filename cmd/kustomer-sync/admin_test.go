package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// adminAddr returns a free loopback address for a run's admin server.
func adminAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
}

// get answers GET url: its status and body; status 0 when nothing answers.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	return send(req)
}

// send answers req's status and body; status 0 and the error when nothing
// answers.
func send(req *http.Request) (int, string) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReadyz polls /readyz until it answers want with a body that contains
// each of says, and returns the body.
func waitReadyz(t *testing.T, base string, want int, r *inProcessRun, says ...string) string {
	t.Helper()
	var code int
	var body string
	require.Eventually(t, func() bool {
		code, body = get(t, base+"/readyz")
		for _, s := range says {
			if !strings.Contains(body, s) {
				return false
			}
		}
		return code == want
	}, 30*time.Second, 50*time.Millisecond, "want /readyz %d saying %q, last %d %s\n%s", want, says, code, body, r.stderr.String())
	return body
}

func writeKey(t *testing.T, key string) string {
	t.Helper()
	return writeTemp(t, "key", key)
}

// startAdminRun starts `run` against NATS at natsURL and Kustomer at
// kustomerURL with apiKey, its admin server on a free loopback port; args
// follow. It answers the run, the admin server's address and its base URL.
func startAdminRun(t *testing.T, natsURL, kustomerURL, apiKey string, args ...string) (r *inProcessRun, addr, base string) {
	t.Helper()
	addr = adminAddr(t)
	r = startRun(t, append([]string{"--nats-url", natsURL, "--kustomer-base-url", kustomerURL,
		"--kustomer-api-key-file", writeKey(t, apiKey), "--admin-addr", addr}, args...)...)
	return r, addr, "http://" + addr
}

func TestReadyzIsUnreadyWhileNATSIsDownAndReadyAgainAfter(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-ready"})
	r, addr, base := startAdminRun(t, srv.ClientURL(), sb.URL, "sk-ready", "--replica-id", "ready-nats")
	require.Equal(t, "ready\n", waitReadyz(t, base, http.StatusOK, r))
	// The container health check says the same, by its exit code.
	out, _, err := cli(t, "", "healthcheck", "--admin-addr", addr)
	require.NoError(t, err)
	require.Equal(t, "ready\n", out, "once, not ready: ready")
	code, body := get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, body)
	// /status is what `status --json` prints.
	code, body = get(t, base+"/status")
	require.Equal(t, http.StatusOK, code, body)
	var served statusReport
	require.NoError(t, json.Unmarshal([]byte(body), &served))
	printed := status(t, srv.ClientURL()).Workflows
	require.Len(t, served.Workflows, len(printed))
	for i := range printed { // the rate in force moves with each heartbeat
		printed[i].RatePerMinute, served.Workflows[i].RatePerMinute = 0, 0
	}
	require.Equal(t, printed, served.Workflows)
	require.Equal(t, "ready-nats", served.Replicas[0].Replica)

	port := srv.Port()
	srv.Shutdown()
	srv.WaitForShutdown()
	// Unready at once (a consumer look-up times out), then because the
	// client saw the connection drop.
	waitReadyz(t, base, http.StatusServiceUnavailable, r, "NATS is not connected")
	_, _, err = cli(t, "", "healthcheck", "--admin-addr", addr)
	require.ErrorContains(t, err, "not ready: http://"+addr+"/readyz answered 503 Service Unavailable: NATS is not connected")
	require.Equal(t, 1, exitCode(err))
	code, _ = get(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "the process is alive while NATS is down")

	natstest.StartWith(t, srv.StoreDir, port)
	waitReadyz(t, base, http.StatusOK, r)
	r.stop()
	code, _ = get(t, base+"/healthz")
	require.Zero(t, code, "a stopped run no longer serves")
	_, _, err = cli(t, "", "healthcheck", "--admin-addr", addr)
	require.ErrorContains(t, err, "not ready: no answer from http://"+addr+"/readyz")
	require.Equal(t, 1, exitCode(err))
}

func TestReadyzIsUnreadyWhileKustomerRejectsTheAPIKeyAndReadyOnceItAccepts(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-granted-later"})
	r, _, base := startAdminRun(t, srv.ClientURL(), sb.URL, "sk-not-yet", "--replica-id", "ready-401")
	body := waitReadyz(t, base, http.StatusServiceUnavailable, r, "workflow default is paused: Kustomer rejects the credentials: start probe failed")
	require.Contains(t, body, "workflow default is paused: Kustomer rejects the credentials: start probe failed")
	require.Contains(t, body, "401")
	require.NotContains(t, body, "sk-not-yet")
	code, status := get(t, base+"/status")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, status, `"credentials_rejected": true`)

	// Kustomer now accepts the key: the probe resumes the workflow.
	sb.Sandbox.SetAPIKey("sk-not-yet")
	waitReadyz(t, base, http.StatusOK, r)
	code, status = get(t, base+"/status")
	require.Equal(t, http.StatusOK, code)
	require.False(t, strings.Contains(status, "credentials_rejected"), status)
	r.stop()
}

func TestRunRefusesAnAdminAddressBeyondLoopbackWithoutAToken(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--admin-addr", ":9090"},
		{"--admin-addr", "0.0.0.0:9090"},
		{"--metrics-addr", ":9090"}, // the old name
	} {
		_, _, err := cli(t, "", append([]string{"run", "--sandbox", "--nats-url", "nats://127.0.0.1:1"}, args...)...)
		require.ErrorContains(t, err, "--admin-token", args)
		require.ErrorContains(t, err, "required when the admin server listens beyond loopback", args)
		require.Equal(t, 2, exitCode(err), args)
	}
}

func TestCustomerIDsLinkToKustomerWhenTheOrgIsKnown(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		flags workerFlags
		want  string
	}{
		{workerFlags{kustomerOrg: "acme"}, "https://acme.kustomerapp.com/app/customers/6b0b42cb"},
		{workerFlags{baseURL: "https://acme.api.kustomerapp.com"}, "https://acme.kustomerapp.com/app/customers/6b0b42cb"},
		{workerFlags{kustomerOrg: "acme", baseURL: "https://api.kustomerapp.com"}, "https://acme.kustomerapp.com/app/customers/6b0b42cb"},
		{workerFlags{baseURL: "https://api.kustomerapp.com"}, ""},
		{workerFlags{baseURL: "https://api.prod2.kustomerapp.com"}, ""},
		{workerFlags{baseURL: "http://127.0.0.1:8080"}, ""},
		{workerFlags{}, ""},
	} {
		link := c.flags.customerURL()
		if c.want == "" {
			require.Nil(t, link, "%+v", c.flags)
			continue
		}
		require.NotNil(t, link, "%+v", c.flags)
		require.Equal(t, c.want, link("6b0b42cb"))
	}
}

func TestHealthcheckAsksAnAddressOnEveryInterfaceOnLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"0.0.0.0:9090":   "http://127.0.0.1:9090/readyz",
		":9091":          "http://127.0.0.1:9091/readyz",
		"[::]:9090":      "http://[::1]:9090/readyz",
		"10.0.0.7:9090":  "http://10.0.0.7:9090/readyz",
		"127.0.0.1:9090": "http://127.0.0.1:9090/readyz",
	} {
		got, err := readyzURL(addr)
		require.NoError(t, err, addr)
		require.Equal(t, want, got, addr)
	}
	_, _, err := cli(t, "", "healthcheck", "--admin-addr", "off")
	require.ErrorContains(t, err, `--admin-addr "off": the admin server is off`)
	require.Equal(t, 2, exitCode(err))
}
