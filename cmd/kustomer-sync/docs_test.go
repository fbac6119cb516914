package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// repoRoot is where README.md's paths start from.
const repoRoot = "../.."

func readme(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	require.NoError(t, err)
	return string(data)
}

// codeBlocks returns the bodies of README's fenced blocks of language lang.
func codeBlocks(text, lang string) []string {
	re := regexp.MustCompile("(?ms)^```" + lang + "\n(.*?)^```")
	var out []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestEveryYAMLConfigInTheREADMEValidates(t *testing.T) {
	t.Parallel()
	blocks := codeBlocks(readme(t), "yaml")
	require.NotEmpty(t, blocks)
	for i, b := range blocks {
		path := filepath.Join(t.TempDir(), "readme.yaml")
		require.NoError(t, os.WriteFile(path, []byte(b), 0o600))
		_, err := mapping.Load(path)
		require.NoError(t, err, "README.md yaml block %d:\n%s", i+1, b)
	}
}

// mapExamples finds `kustomer-sync map …` command lines in text: in sh
// blocks, and in the examples of `map --help`.
func mapExamples(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "  #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.Contains(line, "kustomer-sync map") && !strings.Contains(line, "| jq") {
			out = append(out, line)
		}
	}
	return out
}

// runExample runs one `[echo 'JSON' |] kustomer-sync map ARGS` line from the
// repository's root.
func runExample(t *testing.T, line string) (string, error) {
	t.Helper()
	stdin := ""
	if before, after, ok := strings.Cut(line, "|"); ok {
		echo := strings.TrimSpace(before)
		require.True(t, strings.HasPrefix(echo, "echo '") && strings.HasSuffix(echo, "'"), "example %q: only echo '…' | is understood", line)
		stdin, line = echo[len("echo '"):len(echo)-1], strings.TrimSpace(after)
	}
	args := strings.Fields(strings.TrimPrefix(line, "kustomer-sync "))
	for i, a := range args {
		if strings.HasPrefix(a, "testdata/") {
			_, err := os.Stat(filepath.Join(repoRoot, a))
			require.NoError(t, err, "example %q names a file that does not exist", line)
			args[i] = filepath.Join(repoRoot, a)
		}
	}
	out, _, err := cli(t, stdin, args...)
	return out, err
}

func TestEveryMapExampleInTheREADMEAndInHelpNamesFilesThatExistAndMaps(t *testing.T) {
	t.Parallel()
	var examples []string
	for _, b := range codeBlocks(readme(t), "sh") {
		examples = append(examples, mapExamples(b)...)
	}
	cmd, _, err := (&app{}).rootCommand().Find([]string{"map"})
	require.NoError(t, err)
	examples = append(examples, mapExamples(cmd.Example)...)
	require.GreaterOrEqual(t, len(examples), 3)
	for _, ex := range examples {
		out, err := runExample(t, ex)
		require.NoError(t, err, "example %q:\n%s", ex, out)
		require.Contains(t, out, `"name"`, "example %q maps to a request", ex)
	}
}

func TestEveryCommandInTheREADMEsCLITableExists(t *testing.T) {
	t.Parallel()
	text := readme(t)
	start := strings.Index(text, "## CLI reference")
	require.Positive(t, start)
	table := text[start:]
	table = table[:strings.Index(table[1:], "\n## ")+1]
	root := (&app{}).rootCommand()
	rows := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(table, -1)
	require.GreaterOrEqual(t, len(rows), 8)
	for _, row := range rows {
		// "dlq list / show / replay", "sandbox --addr 127.0.0.1:8080", "publish [FILE]"
		words := strings.Fields(strings.ReplaceAll(row[1], " / ", " /"))
		group, subs := words[0], []string{""}
		var flags []string
		for _, w := range words[1:] {
			switch {
			case strings.HasPrefix(w, "--"):
				flags = append(flags, strings.TrimPrefix(w, "--"))
			case strings.HasPrefix(w, "/"):
				subs = append(subs, strings.TrimPrefix(w, "/"))
			case w == strings.ToLower(w) && !strings.ContainsAny(w, "[.:0123456789"):
				subs[0] = w
			}
		}
		for _, sub := range subs {
			path := strings.Fields(group + " " + sub)
			cmd, _, err := root.Find(path)
			require.NoError(t, err, "README names %q", strings.Join(path, " "))
			require.Equal(t, path[len(path)-1], cmd.Name(), "README names %q, which is not a command", strings.Join(path, " "))
			for _, f := range flags {
				require.NotNil(t, cmd.Flags().Lookup(f), "README names %s --%s", strings.Join(path, " "), f)
			}
		}
	}
}

func TestRunsShowExamplesUseTheRunIDsTheWorkerWrites(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--sandbox", "--log-level", "error", "--nats-url", srv.ClientURL()}, strings.NewReader(""), &strings.Builder{}, &lockedBuffer{})
	}()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	var runs []worker.RunRecord
	require.Eventually(t, func() bool {
		if _, err := js.Stream(ctx, "RUNS"); err != nil {
			return false
		}
		if _, _, err := cli(t, `{"id":"ex-1","name":"Jane"}`, "publish", "--nats-url", srv.ClientURL()); err != nil {
			return false
		}
		l, err := worker.OpenRunLog(ctx, js, worker.RunLogConfig{})
		if err != nil {
			return false
		}
		runs, err = l.List(ctx, worker.RunFilter{})
		return err == nil && len(runs) > 0
	}, 30*time.Second, 50*time.Millisecond)
	real := runs[0].ID

	shape := func(id string) string {
		return regexp.MustCompile(`\d+`).ReplaceAllString(regexp.MustCompile(`[a-z][a-z0-9_]*$`).ReplaceAllString(id, "W"), "N")
	}
	cmd, _, err := (&app{}).rootCommand().Find([]string{"runs", "show"})
	require.NoError(t, err)
	parent := cmd.Parent()
	ids := regexp.MustCompile(`runs show (\S+)`).FindAllStringSubmatch(cmd.Example+"\n"+parent.Example+"\n"+cmd.Long, -1)
	require.NotEmpty(t, ids)
	for _, m := range ids {
		require.Equal(t, shape(real), shape(m[1]), "example id %s, the worker writes ids like %s", m[1], real)
	}
	out, _, err := cli(t, "", "runs", "show", real, "--nats-url", srv.ClientURL())
	require.NoError(t, err)
	require.Contains(t, out, real)
}
