package bench

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func TestLostRateSetsTheLostAnswersModelsShareAndNoOtherModels(t *testing.T) {
	for _, tc := range []struct {
		model string
		rate  float64
		want  float64
	}{
		{sandbox.JobModelLost, 0, 0.01},
		{sandbox.JobModelLost, 0.001, 0.001},
		{sandbox.JobModelParallel, 0.001, 0},
	} {
		sc, err := ModeConfig{JobModel: tc.model, LostRate: tc.rate}.sandboxConfig()
		require.NoError(t, err)
		require.Equal(t, tc.want, sc.BulkSubmitLostRate, "%s with LostRate %v", tc.model, tc.rate)
	}
	_, err := ModeConfig{JobModel: "fast"}.sandboxConfig()
	require.ErrorContains(t, err, `job model "fast"`)
}
