package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// shellWords splits one shell command line as sh would for the README's
// examples: words, '…' and "…" quoting, $VAR in "…" and bare words from env.
func shellWords(t *testing.T, line string, env map[string]string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	expand := func(s string) string {
		return regexp.MustCompile(`\$\{?([A-Z_][A-Z0-9_]*)\}?`).ReplaceAllStringFunc(s, func(m string) string {
			name := strings.Trim(m, "${}")
			v, ok := env[name]
			require.True(t, ok, "README example %q uses $%s, which it does not set", line, name)
			return v
		})
	}
	var raw strings.Builder // the current run of unquoted or double-quoted text, to expand
	flush := func() { w.WriteString(expand(raw.String())); raw.Reset() }
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				w.WriteByte(c)
			}
		case quote == '"':
			if c == '"' {
				flush()
				quote = 0
			} else {
				raw.WriteByte(c)
			}
		case c == '\'':
			flush()
			quote, in = c, true
		case c == '"':
			flush()
			quote, in = c, true
		case c == ' ' || c == '\t':
			flush()
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			raw.WriteByte(c)
			in = true
		}
	}
	require.Zero(t, quote, "README example %q: unbalanced quotes", line)
	flush()
	if in {
		words = append(words, w.String())
	}
	return words
}

// readmeCommands returns the commands of a README sh block: continuation
// lines joined, comments (lines and trailing) dropped, and the comments
// that follow a command (its documented answer) beside it.
func readmeCommands(block string) (cmds, answers []string) {
	block = strings.ReplaceAll(block, "\\\n", " ")
	for _, line := range strings.Split(block, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "# "):
			if len(answers) > 0 && answers[len(answers)-1] == "" {
				answers[len(answers)-1] = strings.TrimPrefix(line, "# ")
			}
		default:
			if i := strings.Index(line, "  #"); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
			cmds, answers = append(cmds, line), append(answers, "")
		}
	}
	return cmds, answers
}

// The README's HTTP ingest example, run as written: the worker started as
// it says (with the test's NATS and a free port), the curl request sent as
// it is, and the documented answer compared with the real one; the event's
// fields are the ones the sample workflow maps, so the customer gets them.
func TestTheREADMEsIngestExampleRunsAsWrittenAgainstTheSampleConfig(t *testing.T) {
	var block string
	for _, b := range codeBlocks(readme(t), "sh") {
		if strings.Contains(b, "curl ") && strings.Contains(b, "/v1/events/") {
			block = b
		}
	}
	require.NotEmpty(t, block, "README.md has an ingest example")
	cmds, answers := readmeCommands(block)
	env := map[string]string{}
	var runArgs, curl []string
	var answer string
	for i, c := range cmds {
		switch {
		case strings.HasPrefix(c, "export "):
			k, v, ok := strings.Cut(strings.TrimPrefix(c, "export "), "=")
			require.True(t, ok, c)
			env[k] = v
			t.Setenv(k, v)
		case strings.HasPrefix(c, "./kustomer-sync run ") || strings.HasPrefix(c, "kustomer-sync run "):
			runArgs = shellWords(t, c, env)[2:]
		case strings.HasPrefix(c, "curl "):
			curl, answer = shellWords(t, c, env), answers[i]
		default:
			t.Fatalf("README ingest example: a command the test does not know: %q", c)
		}
	}
	require.NotEmpty(t, runArgs, "the example starts the worker it posts to")
	require.NotEmpty(t, curl)

	srv := natstest.Start(t)
	addr := adminAddr(t)
	var readmeAddr string
	for i := 0; i < len(runArgs); i++ {
		switch {
		case runArgs[i] == "--ingest-addr":
			readmeAddr, runArgs[i+1] = runArgs[i+1], addr
		case strings.HasPrefix(runArgs[i], "testdata/"):
			runArgs[i] = filepath.Join(repoRoot, runArgs[i])
		}
	}
	require.NotEmpty(t, readmeAddr, "the example's worker serves ingest")
	var config string
	for i, a := range runArgs {
		if a == "--config" {
			config = runArgs[i+1]
		}
	}
	require.NotEmpty(t, config, "the example names its config, one of testdata/")
	r := startRun(t, append(runArgs, "--nats-url", srv.ClientURL(), "--admin-addr", "off", "--replica-id", "readme")...)

	method, url, body := http.MethodGet, "", ""
	headers := http.Header{}
	for i := 1; i < len(curl); i++ {
		switch curl[i] {
		case "-X":
			method = curl[i+1]
			i++
		case "-H":
			k, v, _ := strings.Cut(curl[i+1], ":")
			headers.Add(k, strings.TrimSpace(v))
			i++
		case "-d":
			body = curl[i+1]
			if method == http.MethodGet {
				method = http.MethodPost
			}
			i++
		default:
			url = curl[i]
		}
	}
	require.Contains(t, url, readmeAddr, "curl posts to the worker the example starts")
	url = strings.Replace(url, readmeAddr, addr, 1)
	post := func() (int, string) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		require.NoError(t, err)
		req.Header = headers.Clone()
		return send(req)
	}
	var code int
	var got string
	require.Eventually(t, func() bool { code, got = post(); return code != 0 && code != http.StatusServiceUnavailable },
		30*time.Second, 50*time.Millisecond, "ingest never answered\n%s", r.stderr.String())
	wantCode, wantBody, ok := strings.Cut(answer, " ")
	require.True(t, ok, "the example documents its answer as `# CODE BODY`, not %q", answer)
	require.Equal(t, wantCode, fmt.Sprint(code), "README.md says %s; the worker answered %d %s", answer, code, got)
	require.JSONEq(t, wantBody, got)

	// The event's fields are what the workflow reads: none is dropped.
	cfg, err := mapping.Load(config)
	require.NoError(t, err)
	name := url[strings.LastIndex(url, "/")+1:]
	var wf *mapping.Workflow
	for _, w := range cfg.Workflows {
		if w.Name == name {
			wf = w
		}
	}
	require.NotNil(t, wf, "the example posts to workflow %q, which %s lacks", name, config)
	var event map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &event))
	items, err := wf.Items(event)
	require.NoError(t, err)
	req, err := wf.Map(event, items[0], 0)
	require.NoError(t, err)
	for k := range event {
		if k != "id" {
			require.Contains(t, req, k, "the example's %q is not mapped by workflow %q: the customer would be created without it", k, name)
		}
	}
	r.stop()
}

// Every workflow a README example names (--workflow NAME, /v1/events/NAME)
// is one of the sample config's, so the example runs as written.
func TestEveryWorkflowTheREADMEsExamplesNameIsInTheSampleConfig(t *testing.T) {
	t.Parallel()
	cfg, err := mapping.Load(filepath.Join(repoRoot, "testdata", "workflows.yaml"))
	require.NoError(t, err)
	names := map[string]bool{}
	for _, w := range cfg.Workflows {
		names[w.Name] = true
	}
	re := regexp.MustCompile(`(?:--workflow |-w |/v1/events/)([a-z][a-z0-9_-]*)`)
	found := 0
	for _, b := range codeBlocks(readme(t), "sh") {
		for _, m := range re.FindAllStringSubmatch(b, -1) {
			found++
			require.True(t, names[m[1]], "README.md's example names workflow %q, which testdata/workflows.yaml does not have", m[1])
		}
	}
	require.GreaterOrEqual(t, found, 3)
}

// The README's table of contents lists every section, in order, with the
// anchor GitHub gives it.
func TestTheREADMEsContentsListEverySection(t *testing.T) {
	t.Parallel()
	text := readme(t)
	start := strings.Index(text, "## Contents\n")
	require.Positive(t, start, "README.md has a table of contents")
	body := text[start+len("## Contents\n"):]
	toc := body[:strings.Index(body, "\n## ")]
	var want []string
	anchor := regexp.MustCompile(`[^\w\- ]`)
	for _, m := range regexp.MustCompile(`(?m)^(##|###) (.+)$`).FindAllStringSubmatch(body, -1) {
		indent := ""
		if m[1] == "###" {
			indent = "  "
		}
		a := strings.ReplaceAll(anchor.ReplaceAllString(strings.ToLower(m[2]), ""), " ", "-")
		want = append(want, fmt.Sprintf("%s- [%s](#%s)", indent, m[2], a))
	}
	require.Equal(t, strings.Join(want, "\n"), strings.TrimSpace(toc))
}

// "Running it for real" names the dashboard's URL, and the README's
// "fuller example" is testdata/workflows.yaml's workflows.
func TestTheREADMENamesTheDashboardURLAndItsFullerExampleIsTheSampleConfig(t *testing.T) {
	t.Parallel()
	text := readme(t)
	start := strings.Index(text, "## Running it for real")
	section := text[start : start+strings.Index(text[start+1:], "\n## ")]
	require.Contains(t, section, "http://127.0.0.1:9090/")

	i := strings.Index(text, "A fuller example (`testdata/workflows.yaml`")
	require.Positive(t, i)
	block := codeBlocks(text[i:], "yaml")[0]
	sample, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "workflows.yaml"))
	require.NoError(t, err)
	var fromREADME, fromFile any
	require.NoError(t, yaml.Unmarshal([]byte(block), &fromREADME))
	require.NoError(t, yaml.Unmarshal(sample, &fromFile))
	require.Equal(t, fromFile, fromREADME, "README.md's fuller example and testdata/workflows.yaml differ")
}

// The README says which type an email and a phone get by default, and its
// example of a template that sets them maps as it says.
func TestTheREADMEsEmailAndPhoneTypeExampleMapsAsItSays(t *testing.T) {
	t.Parallel()
	text := readme(t)
	i := strings.Index(text, "**Email and phone types.**")
	require.Positive(t, i, "README.md says what type emails and phones get")
	require.Contains(t, text[i:i+400], "`\"type\":\"home\"`")
	require.Contains(t, text[i:i+400], "`\"type\":\"mobile\"`")
	block := codeBlocks(text[i:], "yaml")[0]
	cfg, err := mapping.Parse("readme.yaml", []byte(block))
	require.NoError(t, err)
	req, err := cfg.Workflows[0].Map(map[string]any{"name": "Ann", "email": "ann@example.com", "phones": []any{"+14155550100"}}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, []any{map[string]any{"email": "ann@example.com", "type": "work"}}, req["emails"])
	require.Equal(t, []any{map[string]any{"phone": "+14155550100", "type": "work"}}, req["phones"])

	// Without a type: the defaults the README names.
	def, err := mapping.DefaultConfig().Workflows[0].Map(map[string]any{"name": "Ann", "emails": "ann@example.com", "phones": "+14155550100"}, nil, 0)
	require.NoError(t, err)
	require.Equal(t, "home", def["emails"].([]any)[0].(map[string]any)["type"])
	require.Equal(t, "mobile", def["phones"].([]any)[0].(map[string]any)["type"])
}
