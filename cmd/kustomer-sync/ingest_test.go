package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestRunRefusesHTTPIngestBeyondLoopbackWithoutAToken(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "run", "--sandbox", "--ingest-addr", "0.0.0.0:0", "--admin-addr", "off")
	require.Error(t, err)
	require.Equal(t, 2, exitCode(err))
	require.Contains(t, err.Error(), "--ingest-token")
	require.Contains(t, err.Error(), "required when HTTP ingest listens beyond loopback")
}

func TestRunWithIngestAddrTurnsAPOSTedEventIntoACustomer(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-ingest"})
	addr := adminAddr(t)
	const token = "ingest-tok-51c2"
	r := startRun(t, "--nats-url", srv.ClientURL(), "--kustomer-base-url", sb.URL, "--kustomer-api-key-file", writeKey(t, "sk-ingest"),
		"--admin-addr", "off", "--replica-id", "ingest-1", "--ingest-addr", addr, "--ingest-token", token)

	post := func() (int, string) {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/events/default", strings.NewReader(`{"id":"web-1","name":"Ann","emails":"Ann@Example.com"}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "form-1")
		return send(req)
	}
	var code int
	var body string
	require.Eventually(t, func() bool { code, body = post(); return code == http.StatusAccepted },
		30*time.Second, 50*time.Millisecond, "last %d %s\n%s", code, &body, r.stderr.String())
	var acc struct {
		Subject   string   `json:"subject"`
		Sequences []uint64 `json:"sequences"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &acc))
	require.Equal(t, "leads.http", acc.Subject)
	code, body = post()
	require.Equal(t, http.StatusAccepted, code, body)
	require.Contains(t, body, `"duplicates":1`, "the retried POST is not a second event")

	require.Eventually(t, func() bool { return len(sb.Sandbox.Customers()) == 1 }, 30*time.Second, 50*time.Millisecond, r.stderr.String())
	// The default workflow maps emails: the posted address arrives (lower-cased).
	emails, _ := sb.Sandbox.Customers()[0].Attributes["emails"].([]any)
	require.Len(t, emails, 1, "the customer has the posted email")
	require.Equal(t, "ann@example.com", emails[0].(map[string]any)["email"])
	require.NotContains(t, r.stderr.String(), token)
	r.stop()
}
