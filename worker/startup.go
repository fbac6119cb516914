package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// StartupTimeoutDefault bounds how long Start (and [RetryStartup]) keeps
// retrying while NATS is unreachable or JetStream has no leader yet, as on a
// cluster that is still forming.
const StartupTimeoutDefault = 2 * time.Minute

// startupBackoff spaces the attempts of a start-up step: quick at first, as
// a cluster usually elects its leaders within a few seconds, never more than
// five seconds apart.
var startupBackoff = loop.Policy{InitialDelay: 100 * time.Millisecond, MaxDelay: 5 * time.Second, Multiplier: 2}

// JetStream API error codes a forming or busy cluster answers with.
const (
	errCodeClusterNotAvail    jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	errCodeNoSuitablePeers    jetstream.ErrorCode = 10005 // peers not all known yet
	errCodeInsufficientRes    jetstream.ErrorCode = 10023 // idem, before the peers report their resources
	errCodeStreamNameInUse    jetstream.ErrorCode = 10058 // another replica created it with another config
	errCodeConsumerNameExists jetstream.ErrorCode = 10013
)

// RetryStartup calls fn until it returns nil, an error retrying cannot mend
// (a subject overlap, a bad configuration), ctx ends, or timeout (0:
// StartupTimeoutDefault) has passed since the call, waiting between attempts
// by the module's one backoff ([loop.Policy]). It is for the steps of
// starting up against a NATS that may be unreachable, have no JetStream
// leader yet, or be answering another replica's identical create: timeouts,
// no responders, 503s and "already in use" are retried, as the next attempt
// reads what the other replica made. fn must be idempotent. The error given
// up with wraps fn's last error and says for how long it was tried.
func RetryStartup(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) error) error {
	if timeout <= 0 {
		timeout = StartupTimeoutDefault
	}
	started := time.Now()
	deadline := started.Add(timeout)
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil || !transientStartup(err) {
			return err
		}
		wait := startupBackoff.Backoff(attempt, rand.Float64())
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("worker: NATS JetStream not ready after %s (%d attempts; the start-up timeout is %s): %w",
				time.Since(started).Round(time.Second), attempt, timeout, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("worker: start-up: %w (while retrying: %w)", ctx.Err(), err)
		}
	}
}

// transientStartup reports whether err is one a later attempt may not meet:
// NATS unreachable or reconnecting, no JetStream leader yet, a request timed
// out while a cluster formed, or a create that raced another replica's.
func transientStartup(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeClusterNotAvail, errCodeNoSuitablePeers, errCodeInsufficientRes, errCodeStreamNameInUse,
			errCodeConsumerNameExists, jetstream.JSErrCodeConsumerExists, jetstream.JSErrCodeConsumerAlreadyExists:
			return true
		}
		return apiErr.Code == http.StatusServiceUnavailable || apiErr.Code == http.StatusRequestTimeout
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrConsumerExists) ||
		errors.Is(err, jetstream.ErrBucketExists)
}

// A start-up step that keeps failing warns once it has waited
// startupWaitLogAfter (replicas racing to create a stream, or a cluster
// electing its leaders, take less and say nothing), then every
// startupWaitLogEvery: a replica waiting for JetStream says so without
// flooding the log.
const (
	startupWaitLogAfter = time.Second
	startupWaitLogEvery = 10 * time.Second
)

// retryStartup is [RetryStartup] for one of the worker's start-up steps,
// warning while step keeps meeting an error retrying may mend.
func (w *Worker) retryStartup(ctx context.Context, timeout time.Duration, step string, fn func(ctx context.Context) error) error {
	started := time.Now()
	var logged time.Time
	return RetryStartup(ctx, timeout, func(ctx context.Context) error {
		err := fn(ctx)
		if err != nil && transientStartup(err) && time.Since(started) >= startupWaitLogAfter && time.Since(logged) >= startupWaitLogEvery {
			logged = time.Now()
			w.log.Warn().Err(err).Str("step", step).Dur("waited", time.Since(started).Round(time.Second)).
				Dur("startup_timeout", cmp.Or(timeout, StartupTimeoutDefault)).Msg("start-up waiting for NATS JetStream: retrying")
		}
		return err
	})
}
