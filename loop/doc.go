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
//   - [Breaker]: one per workflow. Opens on a [Pause] decision or a run of
//     transient failures; Probe closes it again.
//   - [Runner]: one per workflow. Run fans the items of one event out to a
//     fixed set of workers (new goroutines, or those Config.Go hands them
//     to); an item waiting for its retry sits in a delay queue, not in a
//     worker. A worker's panic is raised again by Run.
//   - [Policy]: exponential backoff with jitter, capped; the one backoff of
//     the module (the Breaker's probes and the worker's retries use it too).
//   - [Policy.Next]: the one attempt state machine. After each attempt it
//     says what becomes of the item, as a [Step]: done, retry after a
//     delay, later (the attempt not spent), pause, failed permanently, or
//     retries exhausted. The Runner acts on it, and bulk mode must too, so
//     an item is treated alike however it was sent.
//
// # Decisions
//
// A [Task] returns a decision to steer the [Runner], as river's JobSnooze
// and JobCancel steer its workers. Whoever knows the service classifies its
// answer once, at the edge, and wraps it in one of them:
//
//   - [RetryAfter]: a transient failure; try the item again after the
//     Policy's backoff, or after the delay the service asked for if longer.
//     [Throttled] is the same for a refusal on rate (a 429), which the
//     Limiter handles and a Breaker does not count as a failure.
//   - [Permanent]: retrying cannot help; the item fails at once.
//   - [Pause]: every request would fail alike (credentials, role, region);
//     the Run stops and its unfinished items are reported paused.
//   - [Unknown]: the request may have been carried out (a timeout, a lost
//     connection); it is retried like a transient failure, and the Task must
//     make the next attempt safe (look the result up before doing it again).
//   - [Later]: the attempt could not be made (something else holds the
//     item, for at most the delay given), river's JobSnooze: the item is
//     tried again after the delay, its attempt not spent, no failure
//     recorded, nothing counted by a Breaker.
//
// An error that holds none of them is permanent. When decisions are wrapped
// in one another, the outermost one counts. Each decision's Error is its
// cause's, so wrapping one changes no message a user sees; Unwrap gives the
// cause, so errors.Is and errors.As still reach it. Each type's Is matches
// any value of that type: errors.Is(err, &loop.PauseError{}) asks whether
// err holds a pause, whatever its cause.
//
// Time comes from a [Clock]; tests use looptest.FakeClock and never sleep.
// The package knows nothing of NATS nor of HTTP: the worker acknowledges,
// naks and heartbeats messages around Run, turns Kustomer's answers into
// decisions, and its rate-limit headers into an [Observation].
package loop
