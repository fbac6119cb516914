package mapping

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMatchKeysNameEachMatchValueOnceSortedWithEmailsInLowerCase(t *testing.T) {
	t.Parallel()
	wf := &Workflow{Match: []string{MatchPhone, MatchEmail, MatchExternalID}}
	req := Request{"externalId": "l-1", "emails": []any{map[string]any{"email": "Ada@Example.com"}}}
	require.Equal(t, []string{"email:ada@example.com", "externalId:l-1"}, wf.MatchKeys(req))
	require.Empty(t, (&Workflow{}).MatchKeys(req), "a workflow without match locks nothing")
}

func TestMergeListsKeepsTheCustomersEntriesFirstAndCutsAtTen(t *testing.T) {
	t.Parallel()
	var old []any
	for i := range 9 {
		old = append(old, map[string]any{"email": fmt.Sprintf("old%d@example.com", i), "id": "x"})
	}
	req := Request{"name": "Ada", "emails": []any{
		map[string]any{"email": "OLD0@example.com"}, // already there, whatever its case
		map[string]any{"email": "new1@example.com"},
		map[string]any{"email": "new2@example.com"},
	}}
	body, dropped := MergeLists(req, map[string]any{"emails": old}, true)
	require.Equal(t, "Ada", body["name"])
	emails := body["emails"].([]any)
	require.Len(t, emails, 10)
	require.Equal(t, map[string]any{"email": "old0@example.com"}, emails[0], "the customer's entries first, without Kustomer's own keys")
	require.Equal(t, map[string]any{"email": "new1@example.com"}, emails[9])
	require.Equal(t, []string{"emails: new2@example.com (Kustomer keeps at most 10 per list)"}, dropped)
}

func TestMergeListsLeavesOutListsItCannotMergeAndNeverReplacesAnExternalID(t *testing.T) {
	t.Parallel()
	req := Request{"externalId": "l-2", "emails": []any{map[string]any{"email": "ada@example.com"}}}
	body, dropped := MergeLists(req, nil, false)
	require.Equal(t, Request{"externalId": "l-2"}, body)
	require.Equal(t, []string{"emails: ada@example.com (the customer's current list could not be read)"}, dropped)

	body, dropped = MergeLists(req, map[string]any{"externalId": "l-1"}, true)
	require.NotContains(t, body, "externalId")
	require.Equal(t, []string{"externalId: l-2 (the customer, found by another match key, keeps its own: l-1)"}, dropped)
}
