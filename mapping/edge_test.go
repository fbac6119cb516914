package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestMapRefusesAnEventWhoseInputsAreAllBlank(t *testing.T) {
	t.Parallel()
	w, _ := DefaultConfig().Workflow(DefaultWorkflowName)
	for _, ev := range []map[string]any{nil, {}, {"name": nil, "emails": nil, "phones": nil}, {"name": " ", "emails": []any{}, "phones": ""}} {
		req, err := w.Map(ev, nil, 0)
		require.Nil(t, req)
		require.Equal(t, outcome.Validation, KindOf(err))
		require.ErrorContains(t, err, "every input is blank")
	}
}

func TestMapReportsAnIndexPastTheEndAsAMappingError(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, in(`name: "{{trigger.names[3]}}"`))
	_, err := w.Map(map[string]any{"names": []any{"a"}}, nil, 0)
	require.Equal(t, outcome.Mapping, KindOf(err))
	require.EqualError(t, err, `mapping: name: index 3 is past the end of a list of 1 (get(list, 3) gives a blank instead) (template "{{trigger.names[3]}}")`)

	safe := mustWorkflow(t, in(`name: "{{get(trigger.names, 3) ?? 'none'}}"`))
	req, err := safe.Map(map[string]any{"names": []any{"a"}}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, Request{"name": "none"}, req)
}
