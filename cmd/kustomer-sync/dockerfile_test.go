package main

import (
	"encoding/json"
	goversion "go/version"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// dockerInstr is one instruction of a Dockerfile, continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

func parseDockerfile(text string) []dockerInstr {
	var out []dockerInstr
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

func readDockerfile(t *testing.T) []dockerInstr {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	return parseDockerfile(string(data))
}

// dockerStages splits instructions into build stages (from each FROM on);
// what comes before the first FROM (global ARGs) is stage -1 and left out.
func dockerStages(ins []dockerInstr) [][]dockerInstr {
	var stages [][]dockerInstr
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	return stages
}

func TestDockerfileBuildsAStaticBinaryRunAsNonRootThatGetsSIGTERM(t *testing.T) {
	t.Parallel()
	_ = version // the variable -X main.version sets
	ins := readDockerfile(t)
	stages := dockerStages(ins)
	require.GreaterOrEqual(t, len(stages), 2, "Dockerfile: want a build stage and a small final stage")

	// The build: static, reproducible paths, stripped, versioned.
	var build string
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
	}
	require.NotEmpty(t, build, "Dockerfile: no RUN go build in a build stage")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=${VERSION}", "./cmd/kustomer-sync"} {
		require.Contains(t, build, want, "Dockerfile: go build")
	}
	require.Contains(t, dockerfileArgs(t), "VERSION", "Dockerfile: no ARG VERSION")

	// The Go image is new enough for go.mod (GOTOOLCHAIN=local in the image).
	goMod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	require.NoError(t, err)
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	require.NotNil(t, goLine, "go.mod: no go line")
	var goImage string
	for _, in := range ins {
		if in.cmd == "ARG" && strings.HasPrefix(in.args, "GO_VERSION=") {
			goImage = strings.TrimPrefix(in.args, "GO_VERSION=")
		}
	}
	require.NotEmpty(t, goImage, "Dockerfile: no ARG GO_VERSION=")
	require.GreaterOrEqual(t, goversion.Compare("go"+goImage, "go"+string(goLine[1])), 0, "Dockerfile: GO_VERSION %s is older than go.mod's go %s", goImage, goLine[1])

	// The final image: the binary alone, not root, in exec form, SIGTERM.
	final := stages[len(stages)-1]
	require.NotContains(t, final[0].args, "golang", "Dockerfile: the final image is the Go toolchain's")
	var user, stop string
	var entrypoint []string
	copied := map[string]bool{}
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "STOPSIGNAL":
			stop = in.args
		case "ENTRYPOINT":
			require.NoError(t, json.Unmarshal([]byte(in.args), &entrypoint), "Dockerfile: ENTRYPOINT %s: want exec form [\"/path\", ...], or a shell is PID 1 and SIGTERM never reaches kustomer-sync", in.args)
		case "COPY":
			if f := strings.Fields(in.args); strings.HasPrefix(f[0], "--from=") {
				copied[f[len(f)-1]] = true
			}
		case "RUN":
			t.Errorf("Dockerfile: RUN %s in the final stage: it has no shell", in.args)
		}
	}
	require.NotEmpty(t, user, "Dockerfile: no USER in the final stage: it runs as root")
	name, _, _ := strings.Cut(user, ":")
	require.NotContains(t, []string{"root", "0"}, name, "Dockerfile: USER %s", user)
	require.Equal(t, "SIGTERM", stop, "Dockerfile: STOPSIGNAL")
	require.NotEmpty(t, entrypoint, "Dockerfile: no ENTRYPOINT in the final stage")
	require.True(t, copied[entrypoint[0]], "Dockerfile: ENTRYPOINT %s is not the binary copied from the build stage (%v)", entrypoint[0], copied)
}

// dockerignored reports whether .dockerignore's patterns leave file (a
// slash-separated path from the repository's root) out of the build context:
// the last pattern matching it or one of its parent directories wins, a
// pattern starting with ! keeps it.
func dockerignored(patterns []string, file string) bool {
	ignored := false
	for _, p := range patterns {
		keep := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		for dir := file; dir != "." && dir != "/"; dir = path.Dir(dir) {
			if ok, _ := path.Match(p, dir); ok {
				ignored = !keep
				break
			}
		}
	}
	return ignored
}

func TestDockerignoreKeepsTheSourcesAndDropsTheRest(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	require.NoError(t, err)
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			require.NotContains(t, line, "**", ".dockerignore: %q: this test's matcher does not know **", line)
			patterns = append(patterns, line)
		}
	}

	// What the build needs: go.mod, go.sum, the packages' Go files and the
	// files they embed.
	need := []string{"go.mod", "go.sum"}
	embedRe := regexp.MustCompile(`(?m)^//go:embed (.+)$`)
	root := os.DirFS(repoRoot)
	require.NoError(t, fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
				return fs.SkipDir
			}
			return err
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		need = append(need, p)
		src, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		for _, m := range embedRe.FindAllSubmatch(src, -1) {
			for _, f := range strings.Fields(string(m[1])) {
				need = append(need, path.Join(path.Dir(p), f))
			}
		}
		return nil
	}))
	require.Contains(t, need, "cmd/kustomer-sync/main.go")
	require.Contains(t, need, "cmd/kustomer-sync/demo_leads.jsonl")
	for _, f := range need {
		require.False(t, dockerignored(patterns, f), ".dockerignore leaves %s out of the build", f)
	}
	for _, f := range []string{".git", "data/jetstream", "kustomer-sync", "docker-compose.yml"} {
		require.True(t, dockerignored(patterns, f), ".dockerignore keeps %s in the build context", f)
	}
}
