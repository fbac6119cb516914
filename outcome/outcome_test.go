package outcome_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// The words dead letters, run records and metric labels have always held.
var wire = map[string]outcome.Outcome{
	"created":         outcome.Created,
	"already_created": outcome.AlreadyCreated,
	"invalid_event":   outcome.InvalidEvent,
	"mapping":         outcome.Mapping,
	"validation":      outcome.Validation,
	"permanent":       outcome.Permanent,
	"exhausted":       outcome.Exhausted,
	"max_deliveries":  outcome.MaxDeliveries,
	"paused":          outcome.Paused,
	"canceled":        outcome.Canceled,
}

func TestEveryOutcomeReadsBackFromTheWordsRecordsAlreadyHold(t *testing.T) {
	t.Parallel()
	for word, want := range wire {
		var got outcome.Outcome
		require.NoError(t, json.Unmarshal([]byte(`"`+word+`"`), &got), word)
		require.Equal(t, want, got, word)

		data, err := json.Marshal(want)
		require.NoError(t, err)
		require.JSONEq(t, `"`+word+`"`, string(data))
		require.Equal(t, word, want.String())
	}
}

func TestOutcomesAsMapKeysAndOmittedWhenNone(t *testing.T) {
	t.Parallel()
	data, err := json.Marshal(map[outcome.Outcome]int{outcome.Permanent: 2, outcome.Exhausted: 1})
	require.NoError(t, err)
	require.JSONEq(t, `{"permanent":2,"exhausted":1}`, string(data))
	var back map[outcome.Outcome]int
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, map[outcome.Outcome]int{outcome.Permanent: 2, outcome.Exhausted: 1}, back)

	data, err = json.Marshal(struct {
		Class outcome.Outcome `json:"class,omitempty"`
	}{})
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(data))
}

func TestAnUnknownWordIsAnErrorNamingTheChoices(t *testing.T) {
	t.Parallel()
	var o outcome.Outcome
	err := json.Unmarshal([]byte(`"existed"`), &o)
	require.ErrorContains(t, err, `outcome: "existed" is not an outcome`)
	require.ErrorContains(t, err, "already_created")
	_, err = json.Marshal(outcome.Outcome(200))
	require.Error(t, err)
}

func TestFailuresAreTheDeadLetterClasses(t *testing.T) {
	t.Parallel()
	for _, o := range outcome.Failures {
		require.True(t, o.Failed(), o)
		require.False(t, o.Succeeded(), o)
		require.Equal(t, "failed", o.Summary(), o)
		got, err := outcome.ParseFailure(o.String())
		require.NoError(t, err)
		require.Equal(t, o, got)
	}
	for _, o := range []outcome.Outcome{outcome.None, outcome.Created, outcome.AlreadyCreated, outcome.Paused, outcome.Canceled} {
		require.False(t, o.Failed(), o)
		_, err := outcome.ParseFailure(o.String())
		require.ErrorContains(t, err, "not a failure class", o)
	}
	require.Equal(t, "already_created", outcome.AlreadyCreated.Summary())
}

func ExampleOutcome_Summary() {
	for _, o := range []outcome.Outcome{outcome.Created, outcome.AlreadyCreated, outcome.Exhausted} {
		fmt.Println(o, o.Summary(), o.Failed())
	}
	// Output:
	// created created false
	// already_created already_created false
	// exhausted failed true
}
