package loop

import "time"

// StepKind is what becomes of an item after one attempt.
type StepKind int

const (
	// StepDone: the attempt succeeded.
	StepDone StepKind = iota
	// StepRetry: a transient failure ([RetryAfter], [Throttled],
	// [Unknown]); attempt the item again after the Step's Delay. The
	// attempt is spent.
	StepRetry
	// StepLater: the attempt could not be made ([Later]); attempt the item
	// again after the Step's Delay. The attempt is not spent and is no
	// failure.
	StepLater
	// StepPause: every request would fail alike ([Pause]); the workflow
	// pauses and the item is left unfinished, to start again when the
	// event comes back.
	StepPause
	// StepPermanent: retrying cannot help ([Permanent], or an error that
	// holds no decision); the item fails now.
	StepPermanent
	// StepExhausted: a transient failure on the last attempt MaxAttempts
	// allows; the item fails now.
	StepExhausted
)

var stepNames = [...]string{"done", "retry", "later", "pause", "permanent", "exhausted"}

// String returns the kind's name: "done", "retry", "later", "pause",
// "permanent" or "exhausted".
func (k StepKind) String() string {
	if k < 0 || int(k) >= len(stepNames) {
		return "unknown"
	}
	return stepNames[k]
}

// Step is the decision after one attempt: what to do with the item and, for
// [StepRetry] and [StepLater], how long to wait before its next attempt.
type Step struct {
	Kind  StepKind
	Delay time.Duration // StepRetry and StepLater only; 0 otherwise
}

// Next decides what becomes of an item after attempt number attempt
// (1-based) ended with err; the Runner and bulk mode both act on it, so an
// item is treated alike whichever way it was sent:
//
//   - nil: [StepDone].
//   - [Later]: [StepLater] after the longer of the delay it asks for and
//     InitialDelay (never a busy loop); the attempt is not spent.
//   - [Pause]: [StepPause].
//   - [RetryAfter], [Throttled], [Unknown]: [StepRetry] after the longer of
//     Backoff(attempt, rnd) and the delay the decision asks for; once
//     attempt reaches MaxAttempts, [StepExhausted].
//   - [Permanent], or an error that holds no decision: [StepPermanent].
//
// When decisions are wrapped in one another the outermost counts. Zero
// fields of p take their defaults; rnd is the jitter source, uniform in
// [0,1), as for Backoff. Next is pure: the same arguments give the same
// Step.
func (p Policy) Next(err error, attempt int, rnd float64) Step {
	p = p.withDefaults()
	k, delay := readDecision(err)
	switch k {
	case kindNone:
		return Step{Kind: StepDone}
	case kindLater:
		return Step{Kind: StepLater, Delay: max(delay, p.InitialDelay)}
	case kindPause:
		return Step{Kind: StepPause}
	case kindRetry, kindThrottled, kindUnknown:
		if attempt >= p.MaxAttempts {
			return Step{Kind: StepExhausted}
		}
		return Step{Kind: StepRetry, Delay: max(p.Backoff(attempt, rnd), delay)}
	default:
		return Step{Kind: StepPermanent}
	}
}

// transient reports whether the attempt failed in a way that a later
// attempt could mend: what a canceled context may have caused.
func (s Step) transient() bool {
	return s.Kind == StepRetry || s.Kind == StepLater || s.Kind == StepExhausted
}
