// Package subject matches NATS subject filters the way the server does: which
// subjects a filter captures, whether two filters can match one subject, and
// the smallest set of filters a stream can capture for several workflows.
// Apart from [OverlappingStream] and [ExplainOverlap], which ask a JetStream
// server which stream already captures a subject, it does no I/O.
package subject

import (
	"slices"
	"strings"
)

// Covers reports whether every subject that filter matches is also matched by
// pattern: a stream on pattern stores everything a consumer on filter can ask for.
func Covers(pattern, filter string) bool {
	p := strings.Split(pattern, ".")
	f := strings.Split(filter, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(f) > i
		}
		if i >= len(f) {
			return false
		}
		switch {
		case tok == "*":
			if f[i] == ">" {
				return false
			}
		case tok != f[i]:
			return false
		}
	}
	return len(p) == len(f)
}

// CoveredBy reports whether one of patterns covers filter.
func CoveredBy(patterns []string, filter string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return Covers(p, filter) })
}

// Overlap reports whether some subject matches both a and b (NATS calls this
// a collision): two workflows on them both receive an event on it, and one
// stream cannot list both.
func Overlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}

// Union returns the fewest filters that capture every subject of filters,
// none overlapping another, as a stream's subjects must be: a filter covered
// by another is dropped, and two that overlap without either covering the
// other are widened into one that covers both (leads.*.vip and leads.web.*
// become leads.*.*). Order follows filters; empty ones are ignored.
func Union(filters ...string) []string {
	var out []string
	for _, f := range filters {
		if f == "" {
			continue
		}
	again:
		for i, o := range out {
			switch {
			case Covers(o, f):
				f = ""
				break again
			case Overlap(o, f):
				// Either f covers o, or both must widen: o goes, and the
				// wider filter is checked against the rest again.
				out = slices.Delete(out, i, i+1)
				f = widen(o, f)
				goto again
			}
		}
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// widen returns the narrowest filter that covers two overlapping filters
// (of equal length, or one ending in '>').
func widen(a, b string) string {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	var out []string
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return strings.Join(append(out, ">"), ".")
		case at[i] == bt[i]:
			out = append(out, at[i])
		default:
			out = append(out, "*")
		}
	}
	return strings.Join(out, ".")
}
