package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
)

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
