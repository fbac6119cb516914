package mapping

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMapOfANilEventIsAnEmptyRequest(t *testing.T) {
	t.Parallel()
	w, _ := DefaultConfig().Workflow(DefaultWorkflowName)
	req, err := w.Map(nil, nil, 0)
	require.NoError(t, err)
	require.Empty(t, req)
}

func TestMapReportsAnIndexPastTheEndAsAMappingError(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, in(`name: "{{trigger.names[3]}}"`))
	_, err := w.Map(map[string]any{"names": []any{"a"}}, nil, 0)
	require.Equal(t, KindMapping, KindOf(err))
	require.ErrorContains(t, err, `mapping: name: index out of range`)

	safe := mustWorkflow(t, in(`name: "{{get(trigger.names, 3) ?? 'none'}}"`))
	req, err := safe.Map(map[string]any{"names": []any{"a"}}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, Request{"name": "none"}, req)
}
