package worker

import "testing"

func TestSubjectCoversMatchesNATSWildcards(t *testing.T) {
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
		if got := subjectCovers(c.pattern, c.filter); got != c.want {
			t.Errorf("subjectCovers(%q, %q) = %v, want %v", c.pattern, c.filter, got, c.want)
		}
	}
}
