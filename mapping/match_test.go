package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMatchSettingsAreCheckedWithTheirPlace(t *testing.T) {
	t.Parallel()
	_, err := Parse("m.yaml", []byte(`workflows:
  - name: a
    match: [email, fax, email, phone]
    on_match: upsert
    fresh_ids: true
    inputs:
      emails: "{{trigger.emails}}"
  - name: b
    on_match: update
    inputs:
      name: "{{trigger.name}}"
  - name: c
    mode: bulk
    match: [email]
    inputs:
      emails: "{{trigger.emails}}"
`))
	require.EqualError(t, err, `mapping: m.yaml has 7 mistakes:
  m.yaml:3:20: workflow "a": match: unknown key "fax" (valid: externalId, email, phone)
  m.yaml:3:25: workflow "a": match: "email" is listed twice
  m.yaml:3:32: workflow "a": match: "phone" looks customers up by the phones input, which is not mapped in inputs
  m.yaml:4:15: workflow "a": on_match "upsert": want skip or update
  m.yaml:5:16: workflow "a": fresh_ids skips the externalId look-up, but match does not list externalId
  m.yaml:9:15: workflow "b": on_match "update" needs a match list (e.g. match: [externalId, email]): without one the workflow only creates
  m.yaml:14:12: workflow "c": match looks each customer up before sending it, which mode: bulk does not do: use mode: per-item, or drop match`)
}

func TestMatchDefaultsToSkipAndWithoutMatchAWorkflowOnlyCreates(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("m.yaml", []byte(`workflows:
  - name: a
    subject: "a.>"
    match: [externalId, email]
    fresh_ids: true
    inputs:
      externalId: "{{trigger.id}}"
      emails: "{{trigger.emails}}"
  - name: b
    subject: "b.>"
`))
	require.NoError(t, err)
	a, b := cfg.Workflows[0], cfg.Workflows[1]
	require.Equal(t, []string{MatchExternalID, MatchEmail}, a.Match)
	require.Equal(t, OnMatchSkip, a.OnMatch)
	require.True(t, a.FreshIDs)
	require.Empty(t, b.Match)
	require.Empty(t, b.OnMatch)

	req, err := a.Map(map[string]any{"id": "l-1", "emails": []any{"Ada@Example.com", "b@example.com"}}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, "l-1", req.MatchValue(MatchExternalID))
	require.Equal(t, "ada@example.com", req.MatchValue(MatchEmail))
	require.Equal(t, "", req.MatchValue(MatchPhone))
}

func TestListEntryKeepsOnlyWhatTheSchemaAllows(t *testing.T) {
	t.Parallel()
	entry, id := ListEntry("emails", map[string]any{"id": "65f0", "email": "Ada@Example.com", "type": "work"})
	require.Equal(t, map[string]any{"email": "Ada@Example.com", "type": "work"}, entry)
	require.Equal(t, "ada@example.com", id)
	entry, id = ListEntry("tags", "vip")
	require.Equal(t, "vip", entry)
	require.Equal(t, "vip", id)
}
