package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping"
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

// A bulk run drains its backlog of Loop events, counts each lead created
// once, and, asked to, writes its CPU profile. Not parallel: a process has
// one CPU profile, and the parallel pipeline test profiles too.
func TestABulkModeRunDrainsItsBacklogAndWritesItsProfile(t *testing.T) {
	profile := filepath.Join(t.TempDir(), "bulk.pprof")
	rep, err := RunMode(context.Background(), ModeConfig{
		Mode: mapping.ModeBulk, Events: 500, PerEvent: 100, Rate: 100000, BulkDelay: 50 * time.Millisecond,
		Latency: time.Millisecond, Limit: time.Minute, Profile: profile, Logger: zerolog.Nop(),
	})
	require.NoError(t, err)
	require.True(t, rep.Finished, "every event acknowledged")
	require.Equal(t, 500, rep.Created)
	require.Zero(t, rep.Stats.Duplicates)
	require.Zero(t, rep.DeadLetters)
	fi, err := os.Stat(profile)
	require.NoError(t, err)
	require.Positive(t, fi.Size())
}
