package mapping

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	yamlparser "github.com/goccy/go-yaml/parser"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/outcome"
)

func TestDefaultConfigIsTheSeedSampleRequestOnLeads(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	require.Equal(t, "built-in", cfg.Source)
	require.Len(t, cfg.Workflows, 1)
	w, ok := cfg.Workflow(DefaultWorkflowName)
	require.True(t, ok)
	require.Equal(t, "leads.>", w.Subject)
	require.Equal(t, []string{"name", "emails", "phones"}, w.Inputs())
	require.False(t, w.HasLoop())
	require.Equal(t, "dlq.default", w.DeadLetterSubject)
	require.Equal(t, "kustomer.customers.created.default", w.ResultsSubject)
	require.Equal(t, Retry{MaxAttempts: 5, InitialDelay: time.Second, MaxDelay: time.Minute, Multiplier: 2, Jitter: 0.2}, w.Retry)
	require.Equal(t, ConcurrencyDefault, w.Concurrency)
	require.Equal(t, MaxInFlightDefault, w.MaxInFlight)
	require.Equal(t, MaxItemsDefault, w.MaxItems)
	require.Equal(t, "US", w.DefaultRegion)

	_, ok = cfg.Workflow("nope")
	require.False(t, ok)
}

func TestLoadReadsTheSampleConfigOfTheRepository(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("..", "testdata", "workflows.yaml"))
	require.NoError(t, err)
	require.Len(t, cfg.Workflows, 2)
	batch, ok := cfg.Workflow("batch")
	require.True(t, ok)
	require.True(t, batch.HasLoop())
	require.Equal(t, "{{trigger.leads}}", batch.LoopTemplate())
	require.Equal(t, "batches.>", batch.Subject)

	trigger := map[string]any{"leads": []any{
		map[string]any{"id": "L-1", "first_name": "Ann", "email": "Ann@Example.com", "score": "7"},
		map[string]any{"id": "L-2", "last_name": "Lee", "phone": "555 555 0101"},
	}}
	items, err := batch.Items(trigger)
	require.NoError(t, err)
	require.Len(t, items, 2)
	req, err := batch.Map(trigger, items[1], 1)
	require.NoError(t, err)
	require.Equal(t, Request{
		"externalId": "L-2",
		"name":       "Lee",
		"phones":     []any{map[string]any{"phone": "+15555550101", "type": "mobile"}},
		"custom":     map[string]any{"sourceStr": "web-form"},
	}, req)
	key, err := batch.IdempotencyKey(trigger, items[1], 1, req)
	require.NoError(t, err)
	require.Equal(t, "batch-L-2", key)
}

func TestLoadNamesTheFileWhenItCannotBeRead(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "mapping: read config")
}

func TestParseFillsDefaultsAndKeepsExplicitZeroJitter(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("w.yaml", []byte(`
workflows:
  - name: a
    retry: {max_attempts: 3, initial_delay: 250ms, jitter: 0}
    default_region: gb
`))
	require.NoError(t, err)
	w := cfg.Workflows[0]
	require.Equal(t, Retry{MaxAttempts: 3, InitialDelay: 250 * time.Millisecond, MaxDelay: time.Minute, Multiplier: 2, Jitter: 0}, w.Retry)
	require.Equal(t, "GB", w.DefaultRegion)
	require.Empty(t, w.Inputs())
	_, err = w.Map(map[string]any{"name": "x"}, nil, 0)
	require.Equal(t, outcome.Validation, KindOf(err), "a workflow without inputs has nothing to create")
}

// TestParseRejectsBadConfigsWithFileLineAndColumn: every mistake fails at load time with its place.
func TestParseRejectsBadConfigsWithFileLineAndColumn(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml, want string
	}{
		{"syntax", "workflows:\n  - name: a\n   inputs: [", `mapping: w.yaml:3:`},
		{"no workflows", "workflows: []\n", `mapping: w.yaml: no workflows`},
		{"unknown setting", "workflows:\n  - name: a\n    concurency: 3\n", `mapping: w.yaml:3:5: workflow "a": unknown setting "concurency" (did you mean "concurrency"?)`},
		{"wrong type", "workflows:\n  - name: a\n    concurrency: lots\n", `mapping: w.yaml:3:18: workflow "a": concurrency: want a whole number, got the text "lots"`},
		{"unknown input lists the valid ones", "workflows:\n  - name: a\n    inputs:\n      nme: x\n",
			`mapping: w.yaml:4:7: workflow "a": unknown input "nme" (did you mean "name"?)`},
		{"unknown input far from any lists the valid ones", "workflows:\n  - name: a\n    inputs:\n      nickname: x\n",
			`mapping: w.yaml:4:7: workflow "a": unknown input "nickname" (valid: avatarUrl, birthdayAt, company, custom, emails, externalId, externalIds, locale, locations, name, phones, sharedEmails, sharedPhones, signedUpAt, socials, tags, timeZone, urls, username)`},
		{"unknown root in a template", "workflows:\n  - name: a\n    inputs:\n      name: \"{{triger.name}}\"\n",
			`mapping: w.yaml:4:13: workflow "a": inputs.name: {{triger.name}}: unknown name triger`},
		{"expression syntax", "workflows:\n  - name: a\n    inputs:\n      custom:\n        aStr: \"{{trigger.a +}}\"\n",
			`mapping: w.yaml:5:15: workflow "a": inputs.custom.aStr: {{trigger.a +}}: unexpected token EOF`},
		{"a pipe to a bare name", "workflows:\n  - name: a\n    inputs:\n      emails: \"{{trigger.emails | lower}}\"\n",
			`mapping: w.yaml:4:15: workflow "a": inputs.emails: {{trigger.emails | lower}}: a pipe passes a value to a call: write | lower() (x | lower() is lower(x)), not | lower (unexpected token EOF)`},
		{"or is not a pipe", "workflows:\n  - name: a\n    inputs:\n      custom:\n        aStr: \"{{trigger.a || }}\"\n",
			`inputs.custom.aStr: {{trigger.a ||}}: unexpected token EOF`},
		{"unclosed braces", "workflows:\n  - name: a\n    inputs:\n      name: \"{{trigger.name\"\n",
			`mapping: w.yaml:4:13: workflow "a": inputs.name: "{{" without "}}"`},
		{"empty braces", "workflows:\n  - name: a\n    inputs:\n      name: \"{{ }}\"\n", `inputs.name: empty {{ }}`},
		{"custom key without type suffix", "workflows:\n  - name: a\n    inputs:\n      custom:\n        score: 1\n",
			`mapping: w.yaml:5:9: workflow "a": custom key "score": Kustomer accepts custom keys in camelCase ending in their type`},
		{"item without loop", "workflows:\n  - name: a\n    inputs:\n      name: \"{{item.name}}\"\n",
			`workflow "a": a template uses item or loop.index but the workflow has no loop`},
		{"loop not one expression", "workflows:\n  - name: a\n    loop: \"leads: {{trigger.leads}}\"\n",
			`mapping: w.yaml:3:11: workflow "a": loop must be one {{…}} expression`},
		{"loop uses item", "workflows:\n  - name: a\n    loop: \"{{item.leads}}\"\n", `loop cannot use item`},
		{"duplicate workflow", "workflows:\n  - name: a\n  - name: a\n", `mapping: w.yaml:3:11: workflow "a" is defined twice`},
		{"missing name", "workflows:\n  - subject: leads.>\n", `mapping: w.yaml:2:5: workflow 1 needs a name`},
		{"bad name", "workflows:\n  - name: my leads\n", `workflow name "my leads": use letters, digits`},
		{"bad subject", "workflows:\n  - name: a\n    subject: \"leads. x\"\n", `mapping: w.yaml:3:14: workflow "a": subject "leads. x" is not a NATS subject filter`},
		{"wildcard dead-letter subject", "workflows:\n  - name: a\n    dead_letter_subject: dlq.>\n", `dead_letter_subject "dlq.>" is not a NATS subject`},
		{"negative concurrency", "workflows:\n  - name: a\n    concurrency: -1\n", `concurrency must be at least 1`},
		{"bad region", "workflows:\n  - name: a\n    default_region: XX\n", `default_region "XX" is not a region code`},
		{"bad retry", "workflows:\n  - name: a\n    retry: {initial_delay: 2m}\n", `mapping: w.yaml:3:28: workflow "a": retry.initial_delay: 2m0s is above max_delay (1m0s by default)`},
		{"max delay below initial delay", "workflows:\n  - name: a\n    retry: {initial_delay: 2m, max_delay: 1s}\n", `mapping: w.yaml:3:43: workflow "a": retry.max_delay: 1s must not be below initial_delay (2m0s)`},
		{"jitter above one", "workflows:\n  - name: a\n    retry: {jitter: 1.5}\n", `mapping: w.yaml:3:21: workflow "a": retry.jitter: must be between 0 and 1`},
		{"required unknown", "workflows:\n  - name: a\n    required: [nam]\n", `required: unknown input "nam"`},
		{"required not mapped", "workflows:\n  - name: a\n    required: [name]\n", `required: "name" is not mapped in inputs`},
		{"duplicate input", "workflows:\n  - name: a\n    inputs:\n      name: a\n      name: b\n", `mapping: w.yaml:5:`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("w.yaml", []byte(c.yaml))
			require.Nil(t, cfg)
			require.ErrorContains(t, err, c.want)
			require.Equal(t, outcome.None, KindOf(err), "a config error is not an item failure")
		})
	}
}

// TestParseReportsEveryMistakeOfAFile: a file with several mistakes reports each of them, in file order,
// with its line and column and in the words of the file, not only the first.
func TestParseReportsEveryMistakeOfAFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join("testdata", "config", "several_mistakes.yaml")
	_, err := Load(path)
	var errs ConfigErrors
	require.ErrorAs(t, err, &errs)
	checkGolden(t, filepath.Join("testdata", "config", "several_mistakes.golden"), []byte(err.Error()+"\n"))
	for _, e := range errs {
		require.Positive(t, e.Line, e.Msg)
		require.Positive(t, e.Column, e.Msg)
	}
	require.NotContains(t, err.Error(), "unmarshal")
	require.NotContains(t, err.Error(), "uint64")
}

// TestParseNamesWhatEachTypedSettingWants: a value of the wrong kind in any typed setting says which
// setting, what it wants and what it got, never the decoder's Go types.
func TestParseNamesWhatEachTypedSettingWants(t *testing.T) {
	t.Parallel()
	cases := []struct{ setting, want string }{
		{"retry: {initial_delay: 5}", `w.yaml:3:28: workflow "a": retry.initial_delay: want a duration such as 5s or 1m, got the number 5`},
		{"retry: {max_delay: 1.5}", `w.yaml:3:24: workflow "a": retry.max_delay: want a duration such as 5s or 1m, got the number 1.5`},
		{"retry: {max_delay: soon}", `retry.max_delay: want a duration such as 5s or 1m, got the text "soon"`},
		{"retry: {max_delay: -5s}", `retry.max_delay: want a duration such as 5s or 1m, got the text "-5s"`},
		{"retry: {max_attempts: three}", `retry.max_attempts: want a whole number, got the text "three"`},
		{"retry: {max_attempts: 2.5}", `retry.max_attempts: want a whole number, got the number 2.5`},
		{"retry: {multiplier: true}", `retry.multiplier: want a number, got true`},
		{"retry: {jitter: [0.1]}", `retry.jitter: want a number, got a list`},
		{"retry: {max_attempt: 3}", `w.yaml:3:13: workflow "a": unknown setting "retry.max_attempt" (did you mean "max_attempts"?)`},
		{"retry: 5", `workflow "a": retry: want a mapping of settings, got the number 5`},
		{"concurrency: \"4\"", `concurrency: want a whole number, got the text "4"`},
		{"max_in_flight: [1]", `max_in_flight: want a whole number, got a list`},
		{"max_items: {n: 1}", `max_items: want a whole number, got a mapping`},
		{"subject: 5", `subject: want text, got the number 5`},
		{"subject: [a, b]", `subject: want text, got a list`},
		{"default_region: true", `default_region: want text, got true`},
		{"loop: {a: 1}", `loop: want text, got a mapping`},
		{"idempotency_key: 12", `idempotency_key: want text, got the number 12`},
		{"required: emails", `required: want a list such as [a, b], got the text "emails"`},
		{"required: [1]", `required[0]: want text, got the number 1`},
		{"inputs: [name]", `inputs: want a mapping of input names to templates, got a list`},
		{"frobnicate: yes", `unknown setting "frobnicate" (valid: batch_size, bulk_job_timeout, concurrency, dead_letter_subject`},
		{"batch_size: lots", `batch_size: want a whole number, got the text "lots"`},
		{"linger: 5", `linger: want a duration such as 5s or 1m, got the number 5`},
		{"mode: 1", `mode: want text, got the number 1`},
	}
	for _, c := range cases {
		t.Run(c.setting, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("w.yaml", []byte("workflows:\n  - name: a\n    "+c.setting+"\n"))
			require.ErrorContains(t, err, c.want)
			require.NotContains(t, err.Error(), "Go struct")
		})
	}
}

func TestBulkModeTakesBatchSizeAndLingerWithDefaultsAndLimits(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("w.yaml", []byte("workflows:\n  - name: a\n    mode: bulk\n  - name: b\n    subject: other.>\n    mode: bulk\n    batch_size: 20\n    linger: 2s\n    max_in_flight: 50\n"))
	require.NoError(t, err)
	a, b := cfg.Workflows[0], cfg.Workflows[1]
	require.Equal(t, ModeBulk, a.Mode)
	require.Equal(t, BatchSizeDefault, a.BatchSize)
	require.Equal(t, LingerDefault, a.Linger)
	require.Equal(t, MaxInFlightBulkDefault, a.MaxInFlight, "batches of many events need many events in flight")
	require.Equal(t, 20, b.BatchSize)
	require.Equal(t, 2*time.Second, b.Linger)
	require.Equal(t, 50, b.MaxInFlight)
	require.Equal(t, ModePerItem, DefaultConfig().Workflows[0].Mode)

	for setting, want := range map[string]string{
		"mode: batch":     `workflow "a": mode "batch": want per-item or bulk`,
		"batch_size: 101": `batch_size 101: want 1 to 100 (Kustomer's bulk limit)`,
		"batch_size: -1":  `batch_size -1: want 1 to 100`,
		"linger: -1s":     `linger: want a duration such as 5s or 1m, got the text "-1s"`,
	} {
		_, err := Parse("w.yaml", []byte("workflows:\n  - name: a\n    "+setting+"\n"))
		require.ErrorContains(t, err, want, setting)
	}
}

func TestParseRefusesUnknownTopLevelKeysAndAWorkflowThatIsNotAMapping(t *testing.T) {
	t.Parallel()
	_, err := Parse("w.yaml", []byte("workflow:\n  - name: a\n"))
	require.ErrorContains(t, err, `w.yaml:1:1: unknown setting "workflow" (did you mean "workflows"?)`)
	_, err = Parse("w.yaml", []byte("workflows:\n  - leads\n"))
	require.ErrorContains(t, err, `w.yaml:2:5: workflow 1: want a mapping of settings, got the text "leads"`)
	_, err = Parse("w.yaml", []byte("workflows: leads\n"))
	require.ErrorContains(t, err, `w.yaml:1:12: workflows: want a list such as [a, b], got the text "leads"`)
}

// TestShapeCheckNamesWhatABooleanSettingWants: the check is driven by the settings' Go types, so a
// boolean setting added later is checked like the others.
func TestShapeCheckNamesWhatABooleanSettingWants(t *testing.T) {
	t.Parallel()
	var settings struct {
		Enabled bool `yaml:"enabled"`
	}
	for _, c := range []struct{ yaml, want string }{
		{"enabled: yes please\n", `w.yaml:1:10: workflow "a": enabled: want true or false, got the text "yes please"`},
		{"enabled: 1\n", `w.yaml:1:10: workflow "a": enabled: want true or false, got the number 1`},
	} {
		file, err := yamlparser.ParseBytes([]byte(c.yaml), 0)
		require.NoError(t, err)
		p := &parser{file: "w.yaml"}
		_, ok := p.decodeSettings(file.Docs[0].Body, &settings, `workflow "a": `)
		require.True(t, ok)
		require.EqualError(t, p.result(), "mapping: "+c.want)
	}
	file, err := yamlparser.ParseBytes([]byte("enabled: true\n"), 0)
	require.NoError(t, err)
	p := &parser{file: "w.yaml"}
	p.decodeSettings(file.Docs[0].Body, &settings, "")
	require.NoError(t, p.result())
	require.True(t, settings.Enabled)
}
