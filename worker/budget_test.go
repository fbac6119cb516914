package worker_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// replica is one process's limiter and budget, on its own connection.
type replica struct {
	lim    *loop.Limiter
	budget *worker.Budget
	cancel context.CancelFunc
}

func startReplica(t *testing.T, srv *natstest.Server, id string, cfg worker.BudgetConfig) *replica {
	t.Helper()
	nc, js := srv.Connect(t)
	lim, err := loop.NewLimiter(loop.LimiterConfig{PerMinute: cfg.PerMinute})
	require.NoError(t, err)
	cfg.ReplicaID = id
	b, err := worker.NewBudget(js, nc, lim, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, b.Start(ctx))
	t.Cleanup(func() {
		_ = b.Stop(context.Background())
		cancel()
	})
	return &replica{lim: lim, budget: b, cancel: cancel}
}

func requireShares(t *testing.T, perMinute float64, replicas ...*replica) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, r := range replicas {
			if r.lim.PerMinute() != perMinute || r.budget.Replicas() != len(replicas) {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "every replica should get %v a minute", perMinute)
}

func TestBudgetSplitsTheOrganisationsBudgetBetweenLiveReplicas(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	cfg := worker.BudgetConfig{PerMinute: 900, TTL: 3 * time.Second}
	a := startReplica(t, srv, "a", cfg)
	require.Equal(t, 900.0, a.lim.PerMinute(), "alone, a replica spends the whole budget")
	b := startReplica(t, srv, "b", cfg)
	c := startReplica(t, srv, "c", cfg)
	requireShares(t, 300, a, b, c)

	// A replica that stops hands its share over at once, not after the TTL.
	stopped := time.Now()
	require.NoError(t, c.budget.Stop(t.Context()))
	requireShares(t, 450, a, b)
	require.Less(t, time.Since(stopped), cfg.TTL, "shares grow before the stopped key could have expired")
}

func TestBudgetForgetsAReplicaThatStoppedHeartbeating(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	cfg := worker.BudgetConfig{PerMinute: 900, TTL: 1500 * time.Millisecond}
	a := startReplica(t, srv, "a", cfg)
	b := startReplica(t, srv, "b", cfg)
	requireShares(t, 450, a, b)

	b.cancel() // b dies: no more heartbeats, and its key is not deleted
	requireShares(t, 900, a)
}

func TestBudgetBroadcastsA429PauseToEveryOtherReplica(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	cfg := worker.BudgetConfig{PerMinute: 900}
	a := startReplica(t, srv, "a", cfg)
	b := startReplica(t, srv, "b", cfg)
	c := startReplica(t, srv, "c", cfg)

	before := time.Now()
	worker.ObserveRateLimits(a.lim)(kustomer.RateLimit{Status: http.StatusTooManyRequests, RetryAfter: 30 * time.Second})
	for _, r := range []*replica{b, c} {
		require.Eventually(t, func() bool {
			return r.lim.PausedUntil().After(before.Add(25 * time.Second))
		}, 5*time.Second, 10*time.Millisecond)
	}
	require.WithinDuration(t, before.Add(30*time.Second), a.lim.PausedUntil(), time.Second)

	// A paused replica waits: Wait cannot get through before ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, b.lim.Wait(ctx), context.DeadlineExceeded)
}

func TestNewBudgetRejectsAReplicaIDThatCannotBeAKey(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	lim, err := loop.NewLimiter(loop.LimiterConfig{})
	require.NoError(t, err)
	_, err = worker.NewBudget(js, nc, lim, worker.BudgetConfig{ReplicaID: "host 1"})
	require.ErrorContains(t, err, "worker: ")
	_, err = worker.NewBudget(js, nc, lim, worker.BudgetConfig{ReplicaID: "host."})
	require.Error(t, err)
	_, err = worker.NewBudget(js, nc, lim, worker.BudgetConfig{ReplicaID: "node-1.example.com-42"})
	require.NoError(t, err, "a host name is a fine replica ID")
	_, err = worker.NewBudget(js, nc, nil, worker.BudgetConfig{})
	require.Error(t, err)
}

func TestHeartbeatsCarryTheRateInForceAndWorkflowStatesAtOnceOnRefresh(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	// A long TTL: the periodic heartbeat (every 20 s) cannot be what the
	// test sees after Refresh.
	cfg := worker.BudgetConfig{PerMinute: 900, TTL: time.Minute}
	a := startReplica(t, srv, "a", cfg)
	b := startReplica(t, srv, "b", cfg)
	requireShares(t, 450, a, b)

	var state atomic.Value
	state.Store(worker.WorkflowState{Workflow: "signup", Consumer: "ksync-signup", State: worker.StateRunning})
	a.budget.SetWorkflows(func() []worker.WorkflowState { return []worker.WorkflowState{state.Load().(worker.WorkflowState)} })
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	state.Store(worker.WorkflowState{Workflow: "signup", Consumer: "ksync-signup", State: worker.StatePaused, Reason: "start probe failed: 401", Since: since})
	a.budget.Refresh()

	var got []worker.ReplicaState
	require.Eventually(t, func() bool {
		var err error
		got, err = worker.ReadReplicas(context.Background(), js, "")
		require.NoError(t, err)
		return len(got) == 2 && len(got[0].Workflows) == 1 && got[0].Workflows[0].State == worker.StatePaused
	}, 5*time.Second, 10*time.Millisecond, "replicas: %+v", &got)
	require.Equal(t, "a", got[0].Replica)
	require.Equal(t, 900, got[0].PerMinute)
	require.Equal(t, []worker.WorkflowState{{Workflow: "signup", Consumer: "ksync-signup", State: worker.StatePaused, Reason: "start probe failed: 401", Since: since}}, got[0].Workflows)
	require.Equal(t, "b", got[1].Replica)
	require.Empty(t, got[1].Workflows)
	require.InDelta(t, 450, got[1].RatePerMinute, 1)
}
