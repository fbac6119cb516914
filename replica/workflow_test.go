package replica_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/replica"
)

func TestAWorkflowsStateShowsAStorePauseOverAKustomerPauseAndSinceWhen(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tr := replica.NewWorkflowTracker("wf", "ksync-wf", "leads.>", t0)
	require.Equal(t, replica.WorkflowState{Workflow: "wf", Consumer: "ksync-wf", Subject: "leads.>", State: replica.StateRunning, Since: t0}, tr.State())

	tr.SetPaused(true, "401 from Kustomer", true, t0.Add(time.Second))
	st := tr.State()
	require.Equal(t, replica.StatePaused, st.State)
	require.True(t, st.CredentialsRejected)
	require.Equal(t, t0.Add(time.Second), st.Since)

	tr.StorePaused("cannot store the dead letter", t0.Add(2*time.Second))
	tr.StorePaused("cannot store the dead letter, still", t0.Add(3*time.Second))
	require.True(t, tr.StoreHeld())
	st = tr.State()
	require.True(t, st.StoreFailed)
	require.Equal(t, "cannot store the dead letter, still", st.Reason)
	require.Equal(t, t0.Add(2*time.Second), st.Since, "since the store pause began")

	require.True(t, tr.StoreResumed(t0.Add(4*time.Second)))
	require.False(t, tr.StoreResumed(t0.Add(5*time.Second)), "no store pause to end")
	st = tr.State()
	require.Equal(t, "401 from Kustomer", st.Reason, "still paused on Kustomer")
	require.False(t, st.StoreFailed)

	tr.SetPaused(false, "", false, t0.Add(6*time.Second))
	require.Equal(t, replica.WorkflowState{Workflow: "wf", Consumer: "ksync-wf", Subject: "leads.>", State: replica.StateRunning, Since: t0.Add(6 * time.Second)}, tr.State())
}
