package bench

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
)

// Each pipeline run drains its backlog: every event acknowledged, every
// lead created once, the CPU measured. (How fast is the benchmark's
// business, not a test's.)
func TestPipelineRunsDrainTheirBacklogOnce(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{PipelineFloor, PipelineFloorWrites, mapping.ModePerItem, mapping.ModeBulk} {
		t.Run(kind, func(t *testing.T) { // one at a time: a process has one CPU profile
			rep, err := RunPipeline(context.Background(), PipelineConfig{Kind: kind, Events: 300, Limit: time.Minute, ProfileDir: t.TempDir(), Logger: zerolog.Nop()})
			require.NoError(t, err)
			require.True(t, rep.Acked, "every event acknowledged")
			require.Equal(t, 300, rep.Created, "each lead created once")
			require.Positive(t, rep.CPU)
			require.FileExists(t, rep.Profile)
			if kind == PipelineFloorWrites {
				require.Equal(t, 4*300, rep.Writes, "claim, record, result and run record of each lead")
			}
			if kind == mapping.ModeBulk {
				require.Less(t, rep.Requests, 300/10, "bulk requests, not one per lead")
			}
		})
	}
}

func TestRunPipelineRefusesAnUnknownKind(t *testing.T) {
	t.Parallel()
	_, err := RunPipeline(context.Background(), PipelineConfig{Kind: "batch", Limit: time.Second})
	require.ErrorContains(t, err, `pipeline kind "batch": want floor, floor+writes, per-item or bulk`)
}
