package subject

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCoversMatchesNATSWildcards(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, filter string
		want            bool
	}{
		{"leads.>", "leads.>", true},
		{"leads.>", "leads.web", true},
		{"leads.>", "leads.web.form", true},
		{"leads.>", "leads", false},
		{"leads.*", "leads.web", true},
		{"leads.*", "leads.>", false},
		{"leads.*", "leads.web.form", false},
		{"leads.web", "leads.>", false},
		{"leads.web", "leads.web", true},
		{">", "anything.at.all", true},
		{"orders.>", "leads.web", false},
	}
	for _, c := range cases {
		if got := Covers(c.pattern, c.filter); got != c.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", c.pattern, c.filter, got, c.want)
		}
	}
}

func TestOverlapIsTrueWhenOneSubjectMatchesBoth(t *testing.T) {
	t.Parallel()
	cases := []struct {
		a, b string
		want bool
	}{
		{"leads.>", "leads.vip", true},
		{"leads.vip", "leads.>", true},
		{"leads.*.vip", "leads.web.*", true},
		{"leads.web", "leads.shop", false},
		{"leads.>", "batches.>", false},
		{"leads.*", "leads.web.form", false},
		{"leads", "leads.>", false},
		{"leads.web", "leads.web", true},
	}
	for _, c := range cases {
		if got := Overlap(c.a, c.b); got != c.want {
			t.Errorf("Overlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestUnionCapturesEveryFilterWithoutOverlaps(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   []string
		want []string
	}{
		{[]string{"leads.>", "batches.>"}, []string{"leads.>", "batches.>"}},
		{[]string{"leads.vip", "leads.>"}, []string{"leads.>"}},
		{[]string{"leads.>", "leads.vip", "leads.>"}, []string{"leads.>"}},
		{[]string{"leads.*.vip", "leads.web.*"}, []string{"leads.*.*"}},
		{[]string{"leads.a", "leads.b", "leads.*"}, []string{"leads.*"}},
		{[]string{"a.b.c", "a.*.c", "a.b.>"}, []string{"a.*.>"}},
		{[]string{"", "x"}, []string{"x"}},
	}
	for _, c := range cases {
		got := Union(c.in...)
		for _, f := range c.in {
			if f != "" {
				require.True(t, CoveredBy(got, f), "Union(%q) = %q does not cover %q", c.in, got, f)
			}
		}
		for i := range got {
			for _, o := range got[i+1:] {
				require.False(t, Overlap(got[i], o), "Union(%q) = %q: %q overlaps %q", c.in, got, got[i], o)
			}
		}
		if len(c.want) > 0 {
			require.Equal(t, c.want, got, "Union(%q)", c.in)
		}
	}
}
