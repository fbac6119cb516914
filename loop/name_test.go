package loop_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

func TestDecisionNameNamesTheDecisionAnErrorHolds(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")
	for err, want := range map[error]string{
		nil:                                "",
		cause:                              "permanent",
		loop.Permanent(cause):              "permanent",
		loop.RetryAfter(0, cause):          "retry",
		loop.Throttled(time.Second, cause): "throttled",
		loop.Unknown(cause):                "unknown",
		loop.Later(0, cause):               "later",
		loop.Pause(cause):                  "pause",
		fmt.Errorf("wrapped: %w", loop.Pause(cause)): "pause",
	} {
		require.Equal(t, want, loop.DecisionName(err), "%v", err)
	}
}
