package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

func TestRunsAndDLQOnAServerWithoutTheirStreamsSayWhatToDo(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	for _, args := range [][]string{{"runs", "list"}, {"runs", "show", "LEADS-1-1"}, {"dlq", "list"}, {"dlq", "show", "1"}} {
		_, _, err := cli(t, "", append(args, "--nats-url", srv.ClientURL())...)
		require.Error(t, err)
		require.Contains(t, err.Error(), "there is no stream")
		require.Contains(t, err.Error(), "at "+srv.ClientURL()+". Start 'kustomer-sync run' first")
		require.NotContains(t, err.Error(), "err_code", strings.Join(args, " "))
	}
}

func TestNotFoundErrorsSayTheirPrefixOnce(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx := context.Background()
	_, err := dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(t, err)
	_, err = runlog.New(ctx, js, runlog.Config{})
	require.NoError(t, err)

	_, _, err = cli(t, "", "dlq", "show", "999", "--nats-url", srv.ClientURL())
	require.ErrorContains(t, err, "no entry 999 in LEADS_DLQ")
	require.Equal(t, 1, strings.Count(err.Error(), "dlq:"), err.Error())

	_, _, err = cli(t, "", "runs", "show", "nope", "--nats-url", srv.ClientURL())
	require.ErrorContains(t, err, "no run nope in RUNS")
	require.Equal(t, 1, strings.Count(err.Error(), "runlog:"), err.Error())
}

func TestErrorsSayEachPackagePrefixOnce(t *testing.T) {
	t.Parallel()
	inner := errors.New("dlq: object not found")
	err := tidyError(fmt.Errorf("dlq: entry 5 in LEADS_DLQ: %w", inner))
	require.EqualError(t, err, "dlq: entry 5 in LEADS_DLQ: object not found")
	require.ErrorIs(t, err, inner)
	plain := errors.New("worker: stream X: nats: API error")
	require.Equal(t, plain, tidyError(plain))

	// Through the binary: the leads stream's overlap error wraps its own.
	srv, _, _ := natstest.StartWithStream(t, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"leads.shop.>"}})
	_, _, err = cli(t, "", "run", "--sandbox", "--log-level", "error", "--nats-url", srv.ClientURL())
	require.ErrorContains(t, err, "ORDERS")
	require.Equal(t, 1, strings.Count(err.Error(), "leads:"), err.Error())
}
