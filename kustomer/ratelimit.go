package kustomer

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RateLimit is what one response said about the org's rate budget. Kustomer's
// budget is per organisation and per 60-second window, shared by every key.
//
// A field the response did not carry is zero: read Remaining only when
// Limit > 0.
type RateLimit struct {
	Limit     int       // x-ratelimit-limit: requests per window
	Remaining int       // x-ratelimit-remaining: requests left in this window
	Reset     time.Time // x-ratelimit-reset: when the window ends; zero if absent
	// RetryAfter is the wait the response asked for (Retry-After); on a 429
	// without Retry-After, the time until Reset.
	RetryAfter time.Duration
	Status     int // HTTP status of the response
}

const (
	headerLimit     = "X-Ratelimit-Limit"
	headerRemaining = "X-Ratelimit-Remaining"
	headerReset     = "X-Ratelimit-Reset"
	headerRetry     = "Retry-After"
)

// rateLimitOf reads the rate-limit headers; ok is false when there are none
// and the status is not 429.
func rateLimitOf(h http.Header, status int, now time.Time) (RateLimit, bool) {
	present := false
	for _, k := range []string{headerLimit, headerRemaining, headerReset, headerRetry} {
		if h.Get(k) != "" {
			present = true
		}
	}
	if !present && status != http.StatusTooManyRequests {
		return RateLimit{}, false
	}
	return parseRateLimit(h, status, now), true
}

func parseRateLimit(h http.Header, status int, now time.Time) RateLimit {
	rl := RateLimit{Status: status}
	rl.Limit, _ = strconv.Atoi(strings.TrimSpace(h.Get(headerLimit)))
	rl.Remaining, _ = strconv.Atoi(strings.TrimSpace(h.Get(headerRemaining)))
	rl.Reset = parseReset(h.Get(headerReset), now)
	rl.RetryAfter = parseRetryAfter(h.Get(headerRetry), now)
	if rl.RetryAfter == 0 && status == http.StatusTooManyRequests && !rl.Reset.IsZero() {
		rl.RetryAfter = max(rl.Reset.Sub(now), 0)
	}
	return rl
}

// parseReset reads x-ratelimit-reset, whose unit Kustomer does not document:
// a value above 1e12 is epoch milliseconds, above 1e9 epoch seconds, anything
// smaller seconds from now.
func parseReset(v string, now time.Time) time.Time {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}
	}
	switch {
	case f > 1e12:
		return time.UnixMilli(int64(f))
	case f > 1e9:
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9))
	default:
		return now.Add(time.Duration(f * float64(time.Second)))
	}
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date; 0 if absent,
// unreadable or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f <= 0 || math.IsNaN(f) || f > 1e6 {
			return 0
		}
		return time.Duration(f * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
