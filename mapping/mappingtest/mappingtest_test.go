package mappingtest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
)

// Every test workflow is read by name and parses, so that a test that names
// one runs that workflow and not a config error.
func TestEveryTestWorkflowIsReadByNameAndParses(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "workflows", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		want, err := os.ReadFile(f)
		require.NoError(t, err)
		require.Equal(t, string(want), mappingtest.Workflow(name), name)
		_, err = mapping.Parse(name+".yaml", []byte(mappingtest.Workflow(name)))
		require.NoError(t, err, name)
	}
	require.Panics(t, func() { mappingtest.Workflow("no-such-workflow") })
}
