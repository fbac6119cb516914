package loop

import "errors"

// DecisionName names the decision err holds, as the "class" field of a log
// line says it: "retry", "throttled", "unknown", "later", "pause", or
// "permanent" for any other error (one without a decision is permanent to
// the Runner too); "" for nil. Logs read it rather than the class a client
// gave the error, so that an outage of a store of ours reads "retry" and
// not "permanent".
func DecisionName(err error) string {
	var re *RetryError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re) && re.Throttled:
		return "throttled"
	case errors.Is(err, &RetryError{}):
		return "retry"
	case errors.Is(err, &UnknownError{}):
		return "unknown"
	case errors.Is(err, &LaterError{}):
		return "later"
	case errors.Is(err, &PauseError{}):
		return "pause"
	default:
		return "permanent"
	}
}
