package kustomertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func TestServerClientTalksToItsSandbox(t *testing.T) {
	t.Parallel()
	srv := kustomertest.New(t, sandbox.Config{APIKey: "k"})
	c := srv.Client(t, kustomer.Config{APIKey: "k"})
	created, err := c.CreateCustomer(t.Context(), map[string]any{"externalId": "x"})
	require.NoError(t, err)
	require.Equal(t, srv.Sandbox.Customers()[0].ID, created.ID)
}

func TestServerCleanupDoesNotWaitForHangingCreates(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	t.Run("hanging", func(t *testing.T) {
		srv := kustomertest.New(t, sandbox.Config{TimeoutRate: 1, TimeoutHang: time.Hour})
		c := srv.Client(t, kustomer.Config{Timeout: time.Hour})
		go func() {
			defer close(done)
			_, _ = c.CreateCustomer(context.Background(), map[string]any{"name": "x"})
		}()
		require.Eventually(t, func() bool { return srv.Sandbox.Stats().Timeouts == 1 }, 5*time.Second, time.Millisecond)
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the hanging create was not released at cleanup")
	}
}
