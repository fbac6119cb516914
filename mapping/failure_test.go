package mapping

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestAnItemsMappingFailureIsItsOwnKindOrMapping(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, seedInputs)
	_, err := w.Map(map[string]any{"emails": "nope"}, nil, 0)
	require.Equal(t, outcome.Validation, FailureOf(fmt.Errorf("item 3: %w", err)))
	require.Equal(t, outcome.Mapping, FailureOf(errors.New("loop: not a list")), "any other error is a mapping failure")
}

func TestAWorkflowScopedLedgerKeysItsItemsByItsName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "fan-out", (&Workflow{Name: "fan-out", LedgerScope: LedgerScopeWorkflow}).KeyScope())
	require.Empty(t, (&Workflow{Name: "shared", LedgerScope: LedgerScopeShared}).KeyScope())
}
