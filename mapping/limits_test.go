package mapping

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// TestTemplatesThatWouldRunAwayAreStoppedByTheirLimits: a template that would run for minutes or take
// the worker's memory fails the item as a mapping error naming the input and the limit.
func TestTemplatesThatWouldRunAwayAreStoppedByTheirLimits(t *testing.T) {
	t.Parallel()
	list := make([]any, 2000)
	for i := range list {
		list[i] = float64(i)
	}
	event := map[string]any{"list": list, "name": strings.Repeat("x", 1000), "big": 5e6}
	cases := []struct {
		name, template, what, want string
	}{
		{"nested reduce", `{{reduce(trigger.list, reduce(trigger.list, reduce(trigger.list, #acc + 1, 0), 0), 0)}}`, "steps",
			"stopped: it needs more than 250000 steps, the budget of one item"},
		{"nested reduce over ranges", `{{reduce(1..1000, reduce(1..1000, #acc + #, 0), 0)}}`, "steps", "stopped: it needs more than 250000 steps"},
		{"list doubling in a loop", `{{len(reduce(1..40, concat(#acc, #acc), [1]))}}`, "memory",
			"stopped: it built more than the 1000000 list items, ranges and objects a template may build"},
		{"range from the event", `{{len(1..trigger.big)}}`, "memory",
			"stopped: it built more than the 1000000 list items, ranges and objects a template may build"},
		{"text doubling in a loop", `{{reduce(trigger.list, #acc + #acc, trigger.name)}}`, "text",
			"stopped: it built a text of more than 1024 KiB, the most a template may build"},
		{"text growing in a loop", `{{reduce(trigger.list, #acc + trigger.name, '')}}`, "steps", "stopped: it needs more than 250000 steps"},
		{"loop over a long list in a loop", `{{reduce(trigger.list, #acc + len(filter(trigger.list, # > 5)), 0)}}`, "steps", "stopped: it needs more than 250000 steps"},
		{"repeat", `{{repeat(trigger.name, 100000)}}`, "text", "stopped: repeat() would build 97656 KiB of text"},
		{"replace that multiplies", `{{replace(trigger.name + trigger.name, '', trigger.name)}}`, "text", "stopped: replace() would build"},
		{"join that multiplies", `{{join(map(trigger.list, trigger.name), trigger.name)}}`, "text", "stopped: join() would build"},
		{"text doubling with let", `{{let a = trigger.name + trigger.name; let b = a + a; let c = b + b; let d = c + c; let e = d + d; let f = e + e; let g = f + f; let h = g + g; let i = h + h; let j = i + i; let k = j + j; k}}`,
			"text", "stopped: it built a text of more than 1024 KiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := mustWorkflow(t, in(fmt.Sprintf("name: %q\n      custom: {aStr: %q, bStr: %q}", c.template, c.template, c.template)))
			var err error
			// In a synctest bubble the clock stands still while the template
			// computes, so the limit it is meant to hit (steps, memory, text)
			// decides, not TemplateMaxTime on a slow or -race build.
			synctest.Test(t, func(t *testing.T) { _, err = w.Map(event, nil, 0) })
			require.Error(t, err)
			require.Equal(t, outcome.Mapping, KindOf(err))
			var be *LimitError
			require.ErrorAs(t, err, &be)
			require.Equal(t, c.what, be.What)
			require.ErrorContains(t, err, "mapping: name: "+c.want)
			var es Errors
			require.False(t, errors.As(err, &es), "once a limit is reached, the item stops: one error, not one per input")
		})
	}
}

func TestTemplatesWithinTheirLimitsAreUnaffected(t *testing.T) {
	t.Parallel()
	leads := make([]any, 1000)
	for i := range leads {
		leads[i] = map[string]any{"email": fmt.Sprintf("u%d@example.com", i), "tags": []any{"a", "b"}}
	}
	w := mustWorkflow(t, in(`name: "{{join(map(filter(trigger.leads, len(.tags) > 1), .email), ',')[:20]}}"`+
		"\n      custom: {countNum: \"{{reduce(trigger.leads, #acc + len(#.tags), 0)}}\", lastStr: \"{{repeat('ab', 3) + replace('a-b', '-', '+')}}\"}"))
	req, err := w.Map(map[string]any{"leads": leads}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, Request{"name": "u0@example.com,u1@ex", "custom": map[string]any{"countNum": 2000.0, "lastStr": "ababab" + "a+b"}}, req)
}

func TestTheMeterStopsWorkTheStepsDoNotSeeByTime(t *testing.T) {
	t.Parallel()
	b := newMeter()
	require.NoError(t, b.charge(1))
	b.deadline = time.Now().Add(-time.Second) // as if the first step were long ago
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		err = b.charge(1)
	}
	var be *LimitError
	require.ErrorAs(t, err, &be)
	require.Equal(t, "time", be.What)
	require.EqualError(t, err, "stopped: it ran for more than 1s, the budget of one item")
}

func TestParseRefusesTemplatesThatCouldOnlyExceedTheirLimits(t *testing.T) {
	t.Parallel()
	cases := []struct{ template, want string }{
		{`{{map(1..100000000, #)}}`, "the range 1..100000000 has more than the 1000000 items a template may build"},
		{`{{map(trigger.a, map(#.b, map(#.c, map(#.d, #))))}}`, "loops (map, filter, reduce, …) are nested 4 deep; at most 3 are allowed"},
		{"{{" + strings.Repeat("1 + ", 600) + "1}}", "the expression has more than the 1000 names, values and operators a template may have"},
	}
	for _, c := range cases {
		_, err := Parse("w.yaml", []byte(fmt.Sprintf("workflows:\n  - name: a\n    inputs:\n      name: %q\n", c.template)))
		require.ErrorContains(t, err, c.want)
	}
}

// TestSizeCheckedHelpersBehaveAsTheLibrarysOwn: repeat, replace and join, redefined to refuse oversized
// text, take every form and argument the library's helpers take.
func TestSizeCheckedHelpersBehaveAsTheLibrarysOwn(t *testing.T) {
	t.Parallel()
	event := map[string]any{"s": "a,b", "n": 3.0, "tags": []any{"x", "y"}}
	cases := []struct {
		code string
		want any
	}{
		{"join(split('a,b', ','), '-')", "a-b"},
		{"join(split(trigger.s, ','))", "ab"},
		{"join(trigger.tags, '+')", "x+y"},
		{"trigger.tags | join(',')", "x,y"},
		{"join(map(trigger.tags, upper(#)), ',')", "X,Y"},
		{"repeat(trigger.s, trigger.n)", "a,ba,ba,b"},
		{"repeat('ab', 2)", "abab"},
		{"replace(trigger.s, ',', ';')", "a;b"},
		{"replace('aaa', 'a', 'b', 2)", "bba"},
	}
	for _, c := range cases {
		tm, err := compileString("{{"+c.code+"}}", nil)
		require.NoError(t, err, c.code)
		v, err := tm.eval(&env{Trigger: event, meter: newMeter()})
		require.NoError(t, err, c.code)
		require.Equal(t, c.want, v, c.code)
	}
}
