package worker

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// keepAlive keeps msg ours while its event is handled: it tells JetStream
// the event is in progress every every (a third of the ack wait), on
// clock, so a long mapping, Loop, pause, bulk job or held store write is
// not redelivered to another replica meanwhile. handle starts it once per
// event; stop ends it and returns once it sent its last.
func keepAlive(clock loop.Clock, msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		for {
			t := clock.NewTimer(every)
			select {
			case <-t.C():
				_ = msg.InProgress()
			case <-done:
				t.Stop()
				return
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(done)
		<-exited
	})
}
