package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/ingest"
)

func TestUnknownCommandsAreUsageErrorsNamingThem(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"frobnicate"}, {"dlq", "lsit"}, {"runs", "nope"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			out, _, err := cli(t, "", args...)
			require.ErrorContains(t, err, "unknown command "+`"`+args[len(args)-1]+`"`)
			require.Equal(t, 2, exitCode(err))
			require.Empty(t, out, "no help on stdout for a script to mistake for output")
		})
	}
	_, _, err := cli(t, "", "dlq", "lsit")
	require.ErrorContains(t, err, `did you mean "list"?`)

	out, _, err := cli(t, "")
	require.NoError(t, err, "no command at all prints the help")
	require.Contains(t, out, "Available Commands")
}

func TestPublishSaysEventInTheSingularAndPrintsJSON(t *testing.T) {
	t.Parallel()
	b := newCLIBundle(t)
	out, _, err := b.cli(t, `{"id":"s-1","name":"Jane"}`, "publish")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event to leads.new (0 already published before")

	// s-1 exactly as before is a duplicate (s-1 with another body would be a new event).
	out, _, err = b.cli(t, "{\"id\":\"s-1\",\"name\":\"Jane\"}\n{\"id\":\"s-2\"}\n", "publish", "--json")
	require.NoError(t, err)
	var res publishOutput
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Contains(t, res.Warning, "no worker consumes stream LEADS yet", "the stream has no workflow's consumer")
	res.Warning = ""
	require.Equal(t, publishOutput{Result: ingest.Result{Subject: "leads.new", Published: 1, Duplicates: 1}}, res)
}

func TestPublishNamesTheLineOfInvalidJSON(t *testing.T) {
	t.Parallel()
	cases := []struct{ input, want string }{
		{"{\"a\":1}\n{\"b\":\"x\ny\"}\n", "line 2: invalid JSON"}, // the bad byte is the line break itself
		{"{\"a\":1}\n{\"b\": oops}\n{\"c\":3}\n", "line 2: invalid JSON"},
		{"{\"a\":1}\n{\"b\":2,}\n", "line 2: invalid JSON"},
		{"{\"a\":1}\n{\"b\":2\n{\"c\":3}\n", "line 3: invalid JSON in the record starting on line 2"},
		{"{\"a\":1}\n\n{\"b\":2\n", "line 3: the record starting here is not complete JSON"},
	}
	for _, c := range cases {
		_, _, err := cli(t, c.input, "publish", "--nats-url", "nats://127.0.0.1:1")
		require.ErrorContains(t, err, "stdin: "+c.want, "input %q", c.input)
	}
}

// secretURLs are URLs whose password holds a character that keeps them from
// parsing, so the error path, not the redaction of a parsed URL, is tested.
var secretURLs = []string{"Xq7/Zp9-secret", "Xq7?Zp9-secret", "Xq7 Zp9-secret", "Xq7%Zp9-secret"}

func requireNoSecret(t *testing.T, texts ...string) {
	t.Helper()
	for _, s := range texts {
		for _, frag := range []string{"Xq7", "Zp9", "secret"} {
			require.NotContains(t, s, frag)
		}
	}
}

func TestPasswordsInURLsThatDoNotParseStayOutOfErrorsAndLogs(t *testing.T) {
	t.Parallel()
	for _, pw := range secretURLs {
		t.Run(pw, func(t *testing.T) {
			t.Parallel()
			natsURL := "nats://user:" + pw + "@127.0.0.1:1"
			out, stderr, err := cli(t, `{"name":"Jane"}`, "publish", "--nats-url", natsURL)
			require.ErrorContains(t, err, "connect to NATS at nats://[redacted]@127.0.0.1:1: not a valid URL")
			require.Equal(t, 2, exitCode(err), "a URL that does not parse is a bad flag value")
			requireNoSecret(t, err.Error(), out, stderr)

			out, stderr, err = cli(t, "", "run", "--sandbox", "--log-format", "json", "--nats-url", natsURL)
			require.Error(t, err)
			requireNoSecret(t, err.Error(), out, stderr)

			// In the environment, too.
			_, stderr, err = cli(t, "", "run", "--log-format", "json", "--nats-url", "nats://127.0.0.1:1",
				"--kustomer-api-key-file", apiKeyFile(t), "--kustomer-base-url", "https://user:"+pw+"@kustomer.example")
			require.ErrorContains(t, err, "https://[redacted]@kustomer.example")
			requireNoSecret(t, err.Error(), stderr)
		})
	}
}

func apiKeyFile(t *testing.T) string {
	t.Helper()
	p := t.TempDir() + "/key"
	require.NoError(t, os.WriteFile(p, []byte("k3y"), 0o600))
	return p
}

func TestRedactURLHidesEveryUserInformation(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://user:s3cret@nats-1:4222,nats://nats-2:4222": "nats://[redacted]@nats-1:4222,nats://nats-2:4222",
		"nats://u:a@h1,nats://u:b@h2":                       "nats://[redacted]@h1,nats://[redacted]@h2",
		"nats://tok3n@h:4222":                               "nats://[redacted]@h:4222",
		"user:pw@h1,user:pw@h2":                             "[redacted]@h2", // "pw@h1,user:pw" may be one password
		"nats://u:a,b@h":                                    "nats://[redacted]@h",
		"nats://u:p@ss@h":                                   "nats://[redacted]@h",
		"nats://h:4222":                                     "nats://h:4222",
	} {
		require.Equal(t, want, redactURL(in), in)
	}
}

func TestNATSClientErrorsGoToTheJSONLog(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	a := &app{log: zerolog.New(&logs)}
	opts, err := a.natsOptions()
	require.NoError(t, err)
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		require.NoError(t, opt(&o))
	}
	o.AsyncErrorCB(nil, nil, errors.New("nats: stream not found: recreating ordered consumer"))
	o.DisconnectedErrCB(nil, errors.New("nats: connection reset"))
	requireJSONLines(t, logs.String(), 2)
	require.Contains(t, logs.String(), `"error":"nats: stream not found: recreating ordered consumer"`)
}

// requireJSONLines checks that text is n lines, each a JSON object.
func requireJSONLines(t *testing.T, text string, n int) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	lines := 0
	for sc.Scan() {
		var v map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v), "not a JSON log line: %s", sc.Text())
		lines++
	}
	require.Equal(t, n, lines)
}

func TestValidateJSONListsWorkflowsOrEveryMistake(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, "", "validate", "--json", "../../testdata/workflows.yaml")
	require.NoError(t, err)
	var ok validateJSON
	require.NoError(t, json.Unmarshal([]byte(out), &ok), out)
	require.True(t, ok.Valid)
	require.Equal(t, "batch", ok.Workflows[1].Name)
	require.Equal(t, "{{trigger.leads}}", ok.Workflows[1].Loop)

	bad := t.TempDir() + "/bad.yaml"
	require.NoError(t, os.WriteFile(bad, []byte("workflows:\n  - name: a\n    subject: leads.a\n    concurrency: -1\n    inputs: {name: \"{{trigger.name\"}\n"), 0o600))
	out, _, err = cli(t, "", "validate", "--json", bad)
	require.Error(t, err)
	require.Equal(t, 1, exitCode(err))
	var got validateJSON
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.False(t, got.Valid)
	require.NotEmpty(t, got.Errors)
	for _, e := range got.Errors {
		require.Equal(t, bad, e.File)
		require.Positive(t, e.Line, e.Message)
	}
}

func TestMapJSONIsOneDocumentAndExitsOneWhenAnItemWouldFail(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, `{"leads":[{"id":"1","email":"a@x.com"},{"id":"2","email":"not-an-email"}]}`,
		"map", "--json", "--config", "../../testdata/workflows.yaml", "--workflow", "batch")
	require.ErrorIs(t, err, errMappingFailed)
	require.Equal(t, 1, exitCode(err))
	var res mapResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.False(t, res.OK)
	require.Len(t, res.Items, 2)
	require.NotNil(t, res.Items[0].Request)
	require.Equal(t, "validation", res.Items[1].Kind)
	require.Contains(t, res.Items[1].Error, "not-an-email")
}

func TestDemoHelpPromisesATemporaryStoreNotADataDefault(t *testing.T) {
	t.Parallel()
	out, _, err := cli(t, "", "demo", "--help")
	require.NoError(t, err)
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "--data-dir") {
			line = l
		}
	}
	require.Contains(t, line, "default: a temporary folder, removed at the end")
	require.NotContains(t, line, `(default "data")`)
	require.NotContains(t, line, "KSYNC_DATA_DIR", "a worker's store must not become the demo's")
}

func TestWrongArgumentsAreUsageErrorsShowingTheUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"validate"}, {"run", "extra"}, {"dlq", "show"}, {"version", "x"}} {
		_, _, err := cli(t, "", args...)
		require.ErrorContains(t, err, "(usage: kustomer-sync "+args[0])
		require.Equal(t, 2, exitCode(err), args)
	}
}
