package leads

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestAMessageNeverAcknowledgedUntilMaxDeliverEndsInTheDeadLetterStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	watchConn, _ := srv.Connect(t)

	leads, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	require.NoError(t, err)
	_, err = dlq.EnsureStream(ctx, js, dlq.StreamConfig{})
	require.NoError(t, err)
	cons, err := leads.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "wf-signup", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 100 * time.Millisecond, MaxDeliver: 2, FilterSubject: "leads.signup",
	})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		done <- WatchMaxDeliveries(ctx, watchConn, js, "LEADS", []MaxDeliveryTarget{{Consumer: "wf-signup", Workflow: "signup"}}, zerolog.Nop())
	}()
	require.Eventually(t, func() bool { return watchConn.NumSubscriptions() == 1 }, 5*time.Second, 5*time.Millisecond)

	payload := []byte(`{"name":"Hang Forever"}`)
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: "leads.signup", Data: payload}, jetstream.WithMsgID("lead-hang"))
	require.NoError(t, err)

	// A handler that crashes (never acknowledges) on every delivery.
	deliveries := make(chan struct{}, 10)
	cc, err := cons.Consume(func(jetstream.Msg) { deliveries <- struct{}{} })
	require.NoError(t, err)
	defer cc.Stop()

	store, err := dlq.OpenStore(ctx, js, dlq.StreamDefault)
	require.NoError(t, err)
	var entries []dlq.Record
	require.Eventually(t, func() bool {
		entries, err = store.List(ctx, dlq.Filter{})
		return err == nil && len(entries) == 1
	}, 10*time.Second, 20*time.Millisecond)

	r := entries[0]
	require.Equal(t, outcome.MaxDeliveries, r.Class)
	require.Equal(t, "signup", r.Workflow)
	require.Equal(t, "leads.signup", r.Subject)
	require.Equal(t, uint64(1), r.StreamSeq)
	require.Equal(t, "lead-hang", r.MsgID)
	require.Equal(t, 2, r.Attempts)
	require.Equal(t, payload, r.Payload)
	require.NotZero(t, r.LastFailure)
	require.Contains(t, r.Error, "2 deliveries")
	require.Len(t, deliveries, 2)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("WatchMaxDeliveries did not return after cancel")
	}
	require.Equal(t, 0, watchConn.NumSubscriptions(), "subscriptions are removed on return")
}

func TestWatchMaxDeliveriesRejectsATargetWithoutAWorkflow(t *testing.T) {
	t.Parallel()
	nc, js := natstest.Start(t).Connect(t)
	err := WatchMaxDeliveries(context.Background(), nc, js, "LEADS", []MaxDeliveryTarget{{Consumer: "c"}}, zerolog.Nop())
	require.ErrorContains(t, err, "workflow")
}
