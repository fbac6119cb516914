package mapping

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// TestRuntimeErrorsNameTheFunctionAndTheKindsOfValues: a template that fails at run time says what
// failed in a workflow author's words.
func TestRuntimeErrorsNameTheFunctionAndTheKindsOfValues(t *testing.T) {
	t.Parallel()
	event := map[string]any{"n": 12.0, "s": "abc", "a": []any{1.0, "x"}, "m": map[string]any{"k": 1.0}}
	cases := []struct{ code, want string }{
		{"upper(trigger.n)", "upper() wants text, got a number"},
		{"lower(trigger.a)", "lower() wants text, got a list"},
		{"trim(trigger.m)", "trim() wants text, got an object"},
		{"upper(trigger.missing)", `upper() wants text, got a blank value (a missing value is blank: write upper(x ?? "") to allow it)`},
		{"trigger.s + trigger.n", "cannot use + on text and a number (to join text and a value, write string(value))"},
		{"trigger.m + 1", "cannot use + on an object and a number"},
		{"trigger.n.x", "cannot read .x of a number"},
		{"trigger.s.x", "wants a whole number as an index, got text"},
		{"len(trigger.n)", "len() cannot take a number"},
		{"filter(trigger.n, # > 1)", "filter() wants a list, got a number"},
		{"int(trigger.s)", `int() cannot read the text "abc" as a whole number`},
		{"trigger.s ? 1 : 2", "this expression wants true or false, got text"},
		{"keys(trigger.s)", "keys() wants an object, got text"},
		{"trigger.n in trigger.n", `"in" wants a list, an object or text on its right, got a number`},
		{"now() + trigger.s", "cannot use + on a date and text (to join text and a value, write string(value))"},
		{"formatDate(trigger.m, '2006')", "formatDate() wants a date (RFC 3339 text or Unix seconds), got an object"},
	}
	goType := regexp.MustCompile(`float64|int64|interface \{\}|map\[string\]|\[\]interface|\[\]any|reflect|time\.Time`)
	for _, c := range cases {
		t.Run(c.code, func(t *testing.T) {
			t.Parallel()
			tm, err := compileString("{{"+c.code+"}}", nil)
			require.NoError(t, err)
			_, err = tm.eval(&env{Trigger: event})
			require.EqualError(t, err, c.want)
			require.NotRegexp(t, goType, err.Error())
		})
	}
}

func TestMapErrorOfATemplateTypeMistakeHasNoGoTypeNames(t *testing.T) {
	t.Parallel()
	w := mustWorkflow(t, in(`name: "{{upper(trigger.name)}}"`))
	_, err := w.Map(map[string]any{"name": 12.0}, nil, 0)
	require.EqualError(t, err, `mapping: name: upper() wants text, got a number (template "{{upper(trigger.name)}}")`)
	require.Equal(t, outcome.Mapping, KindOf(err))
}
