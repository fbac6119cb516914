// Package loop is the Loop node: it runs the items of one event with bounded
// concurrency, under one rate budget for the whole process, retrying what
// Kustomer says is retryable, and pausing the workflow on systemic failure.
//
// The pieces:
//   - [Limiter]: one per process. A golang.org/x/time/rate token bucket that
//     every attempt waits on, a pause that a 429 imposes on every waiter
//     (and, through OnPause, on every replica), and pacing from Kustomer's
//     x-ratelimit-* headers: it measures what the organisation's other
//     clients spend in each window and leaves it to them, so neither they
//     nor we hit a 429. SetShare gives it this replica's part of the
//     organisation's budget.
//   - [Breaker]: one per workflow. Opens on a 401/403 or a run of transient
//     failures; Probe closes it again.
//   - [Runner]: one per workflow. Run fans the items of one event out to a
//     fixed set of workers (a github.com/sourcegraph/conc pool); an item
//     waiting for its retry sits in a delay queue, not in a worker.
//   - [Policy]: exponential backoff with jitter, capped.
//
// Time comes from a [Clock]; tests use looptest.FakeClock and never sleep.
// The package knows nothing of NATS: the worker acknowledges, naks and
// heartbeats messages around Run.
package loop
