package worker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/replica"
)

// A replica told to stop (SIGTERM during a rollout) keeps its share of the
// budget while it drains: were it to stop heartbeating at once, its key would
// expire after the TTL and the other replicas would take its share while it
// still calls Kustomer, and the deployment would go over the organisation's
// budget (429s). It runs in real time: the budget's TTL is the NATS
// server's, and the sandbox's windows are the ones being counted.
func TestARollingRestartOfThreeReplicasNeverExceedsTheBudgetInAnyWindow(t *testing.T) {
	t.Parallel()
	const (
		window    = time.Second
		perWindow = 30 // R: what the sandbox lets through per window
		items     = 60 // per event; one event in flight per replica
		events    = 9
	)
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: perWindow, Window: window, Latency: 5 * time.Millisecond})
	sandboxStart := time.Now()
	cfg, err := mapping.Parse("rollout.yaml", []byte(strings.Replace(loopConfig, "    loop:", "    max_in_flight: 1\n    loop:", 1)))
	require.NoError(t, err)
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()

	// The deployment's budget is 90% of R, per minute: a token bucket may
	// spend its rate and its burst within one window.
	perMinute := perWindow * 9 / 10 * int(time.Minute/window)
	type member struct {
		w     *Worker
		term  context.CancelFunc // SIGTERM: ends the context the process started the worker with
		calls *atomic.Int64      // requests to Kustomer
	}
	start := func(id string) member {
		t.Helper()
		nc, js := srv.Connect(t)
		calls := &atomic.Int64{}
		w, err := New(Config{
			Conn: nc, JetStream: js, Workflows: cfg.Workflows,
			Kustomer:      kustomer.Config{BaseURL: sb.URL, APIKey: testAPIKey, Timeout: 2 * time.Second},
			WrapKustomer:  func(k Kustomer) Kustomer { return countCalls{k, calls} },
			RatePerMinute: perMinute, RateBurst: 3,
			Budget:     replica.BudgetConfig{TTL: time.Second},
			Ledger:     ledger.Config{Lease: 3 * time.Second},
			ReplicaID:  id,
			Logger:     zerolog.New(logs).With().Str("replica", id).Logger(),
			Registerer: reg,
		})
		require.NoError(t, err)
		ctx, term := context.WithCancel(context.Background())
		require.NoError(t, w.Start(ctx))
		t.Cleanup(func() { _ = w.StopAndCancel(context.Background()) })
		return member{w: w, term: term, calls: calls}
	}
	replicas := []member{start("r-0"), start("r-1"), start("r-2")}
	require.Eventually(t, func() bool { return replicas[0].w.budget.Replicas() == 3 }, 5*time.Second, 10*time.Millisecond)

	_, js := srv.Connect(t)
	var ids []string
	for e := range events {
		var leads []string
		for i := range items {
			id := fmt.Sprintf("roll-%d-%d", e, i)
			ids = append(ids, id)
			leads = append(leads, fmt.Sprintf(`{"id":%q,"name":"Lead %s"}`, id, id))
		}
		m := nats.NewMsg("leads.batch")
		m.Data = []byte(`{"leads":[` + strings.Join(leads, ",") + `]}`)
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("roll-%d", e))
		_, err := js.PublishMsg(context.Background(), m)
		require.NoError(t, err)
	}

	// Roll: each replica in turn is told to stop while its event is in
	// flight, drains (longer than the budget's TTL), and is replaced.
	for i := range replicas {
		old := replicas[i]
		require.Eventually(t, func() bool { return old.calls.Load() > 0 }, 20*time.Second, 10*time.Millisecond, "replica %d never called Kustomer", i)
		old.term()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		require.NoError(t, old.w.Stop(ctx), "the drain finished within its deadline")
		cancel()
		replicas[i] = start(fmt.Sprintf("r-%d-new", i))
	}

	require.Eventually(t, func() bool { return len(sb.Sandbox.CountByExternalID()) == len(ids) }, 60*time.Second, 20*time.Millisecond,
		"only %d of %d created", len(sb.Sandbox.CountByExternalID()), len(ids))
	require.Zero(t, sb.Sandbox.Stats().RateLimited, "no request went over the budget\n%s", lastLines(logs.String(), 30))
	perWin := map[int]int{}
	for _, c := range sb.Sandbox.Customers() {
		perWin[int(c.CreatedAt.Sub(sandboxStart)/window)]++
	}
	for w, n := range perWin {
		require.LessOrEqual(t, n, perWindow, "window %d", w)
	}
	counts := sb.Sandbox.CountByExternalID()
	for _, id := range ids {
		require.Equal(t, 1, counts[id], "externalId %s", id)
	}
}

// countCalls counts the requests a worker makes to Kustomer.
type countCalls struct {
	Kustomer
	n *atomic.Int64
}

func (c countCalls) CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error) {
	c.n.Add(1)
	return c.Kustomer.CreateCustomer(ctx, body)
}

func (c countCalls) CustomerByExternalID(ctx context.Context, id string) (*kustomer.Customer, error) {
	c.n.Add(1)
	return c.Kustomer.CustomerByExternalID(ctx, id)
}
