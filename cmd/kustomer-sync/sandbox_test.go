package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
)

func TestSandboxBadFaultFlagsAreUsageErrorsNamingTheFlag(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "sandbox", "--addr", "127.0.0.1:1", "--bulk-stuck-rate", "2", "--bulk-delay", "-1s", "--error-rate", "-0.1")
	require.ErrorContains(t, err, `--bulk-stuck-rate "2": want a share from 0 to 1`)
	require.ErrorContains(t, err, `--bulk-delay "-1s": want a duration of zero or more`)
	require.ErrorContains(t, err, `--error-rate "-0.1": want a share from 0 to 1`)
	require.Equal(t, 2, exitCode(err))
}

// startSandbox runs `kustomer-sync sandbox` on a free address with args,
// its log to logs, until the test ends; it answers a client of it and the
// address.
func startSandbox(t *testing.T, logs io.Writer, args ...string) (*kustomer.Client, string) {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"sandbox", "--addr", addr}, args...), strings.NewReader(""), io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	c, err := kustomer.New(kustomer.Config{BaseURL: "http://" + addr, APIKey: "any"})
	require.NoError(t, err)
	return c, addr
}

// submitOnceUp submits a bulk job of one item, "r1", once the sandbox
// answers.
func submitOnceUp(t *testing.T, c *kustomer.Client) *kustomer.BulkJob {
	t.Helper()
	var job *kustomer.BulkJob
	var err error
	require.Eventually(t, func() bool {
		job, err = c.CreateCustomersBulk(t.Context(), []kustomer.BulkItem{{Ref: "r1", Body: map[string]any{"name": "x"}}})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the sandbox never answered: %v", err)
	return job
}

func TestSandboxCommandServesAsynchronousBulkJobsWithTheirFaults(t *testing.T) {
	t.Parallel()
	c, _ := startSandbox(t, io.Discard, "--bulk-delay", "300ms", "--bulk-item-failure-rate", "1")
	ctx := t.Context()
	job := submitOnceUp(t, c)
	require.Equal(t, "queued", job.Status)
	require.Eventually(t, func() bool {
		polled, err := c.BulkJob(ctx, job.ID)
		return err == nil && polled.Done()
	}, 10*time.Second, 20*time.Millisecond)
	res, err := c.BulkResults(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, kustomer.ClassRetryable, kustomer.ClassOf(res.Outcomes([]string{"r1"})[0].Err), "--bulk-item-failure-rate 1 fails the item")
}

// The standalone sandbox lists and counts its customers, logs each request
// at info, and its --help lists only the global flags it uses.
func TestStandaloneSandboxListsItsCustomersLogsRequestsAndHelpsWithItsOwnFlags(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	c, addr := startSandbox(t, logs, "--log-format", "json")
	var err error
	require.Eventually(t, func() bool {
		_, err = c.CreateCustomer(t.Context(), map[string]any{"name": "Ann", "externalId": "a-1"})
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the sandbox never answered: %v", err)

	resp, err := http.Get("http://" + addr + "/_sandbox/customers")
	require.NoError(t, err)
	var list struct {
		Count     int `json:"count"`
		Customers []struct {
			ID         string         `json:"id"`
			Attributes map[string]any `json:"attributes"`
		} `json:"customers"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, list.Count)
	require.Equal(t, "a-1", list.Customers[0].Attributes["externalId"])

	var requests int
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == "sandbox request" {
			require.Equal(t, "info", rec["level"])
			requests++
		}
	}
	require.GreaterOrEqual(t, requests, 2, "the create and the listing are logged at info")

	out, _, err := cli(t, "", "sandbox", "--help")
	require.NoError(t, err)
	require.Contains(t, out, "--log-level")
	require.Contains(t, out, "/_sandbox/customers")
	for _, unused := range []string{"--nats-url", "--nats-creds", "--context"} {
		require.NotContains(t, out, unused, "the sandbox does not use %s", unused)
	}
	out, _, err = cli(t, "", "run", "--help")
	require.NoError(t, err)
	require.Contains(t, out, "--nats-url", "other commands still list the NATS flags")
}

func TestSandboxJobModelFlagsAreCheckedAndServed(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "sandbox", "--addr", "127.0.0.1:1", "--job-model", "fast", "--bulk-timing", "often", "--bulk-submit-lost-rate", "3")
	require.ErrorContains(t, err, `--job-model "fast": want one of parallel, serial, spread`)
	require.ErrorContains(t, err, `--bulk-timing "often": want one of parallel, serial, spread`)
	require.ErrorContains(t, err, `--bulk-submit-lost-rate "3": want a share from 0 to 1`)
	require.Equal(t, 2, exitCode(err))
	_, _, err = cli(t, "", "bench", "--mode", "bulk", "--job-model", "lost-answers", "--lost-rate", "3")
	require.ErrorContains(t, err, "--lost-rate 3: want a share in (0, 1]")
	require.Equal(t, 2, exitCode(err))

	c, _ := startSandbox(t, io.Discard, "--job-model", "empty-batches", "--bulk-delay", "200ms")
	ctx := t.Context()
	job := submitOnceUp(t, c)
	res, err := c.BulkResults(ctx, job.ID)
	require.NoError(t, err)
	require.False(t, res.CompleteFor(1))
	require.Empty(t, res.Results, "an empty list until done")
	require.Eventually(t, func() bool {
		res, err := c.BulkResults(ctx, job.ID)
		return err == nil && res.CompleteFor(1) && res.Status == ""
	}, 10*time.Second, 20*time.Millisecond, "done from the counts, no status")
}
