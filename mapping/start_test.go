package mapping

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStartDefaultsToEveryEventAndSkipsOnlyWhenAskedWithNewOrATime(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("w.yaml", []byte(`workflows:
  - {name: a, subject: "a.>"}
  - {name: b, subject: "b.>", start: new}
  - {name: c, subject: "c.>", start: "2026-11-01T10:00:00Z"}
`))
	require.NoError(t, err)
	require.Equal(t, StartAll, cfg.Workflows[0].Start, "a backlog published before the first start is processed")
	require.Equal(t, StartNew, cfg.Workflows[1].Start)
	require.Equal(t, StartTime, cfg.Workflows[2].Start)
	require.Equal(t, time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC), cfg.Workflows[2].StartTime.UTC())
}

func TestStartAndLedgerScopeRejectOtherValuesWithTheirPlace(t *testing.T) {
	t.Parallel()
	_, err := Parse("w.yaml", []byte("workflows:\n  - name: a\n    start: yesterday\n"))
	require.EqualError(t, err, `mapping: w.yaml:3:12: workflow "a": start "yesterday": want all, new, or an RFC 3339 time such as 2026-01-31T00:00:00Z`)
	_, err = Parse("w.yaml", []byte("workflows:\n  - name: a\n    ledger_scope: mine\n"))
	require.EqualError(t, err, `mapping: w.yaml:3:19: workflow "a": ledger_scope "mine": want shared or workflow`)
}

func TestLedgerScopeIsPerWorkflowOnlyWhereSubjectsOverlap(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("w.yaml", []byte(`workflows:
  - {name: all-leads, subject: "leads.>"}
  - {name: vip, subject: "leads.vip"}
  - {name: batch, subject: "batches.>"}
  - {name: pinned, subject: "leads.*", ledger_scope: shared}
`))
	require.NoError(t, err)
	scopes := map[string]string{}
	for _, w := range cfg.Workflows {
		scopes[w.Name] = w.LedgerScope
	}
	require.Equal(t, map[string]string{
		"all-leads": LedgerScopeWorkflow, // overlaps vip and pinned
		"vip":       LedgerScopeWorkflow, // overlaps all-leads and pinned
		"batch":     LedgerScopeShared,   // alone on its subject
		"pinned":    LedgerScopeShared,   // explicit
	}, scopes)
	vip, _ := cfg.Workflow("vip")
	require.Equal(t, []string{"all-leads", "pinned"}, cfg.Overlapping(vip))
	batch, _ := cfg.Workflow("batch")
	require.Empty(t, cfg.Overlapping(batch))
}
