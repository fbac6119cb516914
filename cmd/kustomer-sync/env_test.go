package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
)

func TestBadEnvironmentValuesAreUsageErrorsNamingTheVariable(t *testing.T) {
	cases := []struct{ key, value, want string }{
		{"KSYNC_RATE_PER_MINUTE", "1,000", `KSYNC_RATE_PER_MINUTE="1,000" (--rate-per-minute): want a whole number`},
		{"KSYNC_RATE_PER_MINUTE", "abc", `KSYNC_RATE_PER_MINUTE="abc" (--rate-per-minute): want a whole number`},
		{"KSYNC_RATE_PER_MINUTE", "0", `KSYNC_RATE_PER_MINUTE="0" (--rate-per-minute): want 1 or more`},
		{"KSYNC_DRAIN_TIMEOUT", "30", `KSYNC_DRAIN_TIMEOUT="30" (--drain-timeout): want a duration with a unit`},
		{"KSYNC_STREAM_REPLICAS", "4x", `KSYNC_STREAM_REPLICAS="4x" (--stream-replicas): want a whole number`},
		{"KSYNC_STREAM_REPLICAS", "9", `KSYNC_STREAM_REPLICAS="9" (--stream-replicas): want 1 to 5`},
		{"KSYNC_ACK_WAIT", "-1s", `KSYNC_ACK_WAIT="-1s" (--ack-wait): want a duration above zero`},
		{"KSYNC_LOG_LEVEL", "loud", `KSYNC_LOG_LEVEL="loud" (--log-level): want debug, info, warn or error`},
	}
	for _, c := range cases {
		t.Run(c.key+"="+c.value, func(t *testing.T) {
			t.Setenv(c.key, c.value)
			_, _, err := cli(t, "", "run", "--sandbox", "--nats-url", "nats://127.0.0.1:1")
			require.ErrorContains(t, err, c.want)
			require.Equal(t, 2, exitCode(err))
		})
	}
}

func TestBadFlagValuesAreUsageErrorsNamingTheFlag(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--rate-per-minute", "1,000"}, `--rate-per-minute "1,000": want a whole number`},
		{[]string{"--rate-per-minute", "0"}, `--rate-per-minute "0": want 1 or more`},
		{[]string{"--kustomer-timeout", "0s"}, `--kustomer-timeout "0s": want a duration above zero`},
		{[]string{"--claim-lease", "5s"}, `--claim-lease "5s": must exceed --kustomer-timeout 10s`},
		{[]string{"--max-event-bytes", "-1"}, `--max-event-bytes "-1": want 1 or more`},
		{[]string{"--sandbox-error-rate", "2"}, `--sandbox-error-rate "2": want a share from 0 to 1`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			args := append([]string{"run", "--sandbox", "--nats-url", "nats://127.0.0.1:1"}, c.args...)
			_, _, err := cli(t, "", args...)
			require.ErrorContains(t, err, c.want)
			require.NotContains(t, err.Error(), "strconv")
			require.Equal(t, 2, exitCode(err))
		})
	}
}

func TestEveryRunFlagHasAnEnvironmentVariableShownInHelp(t *testing.T) {
	t.Parallel()
	a := &app{}
	root := a.rootCommand()
	cmd, _, err := root.Find([]string{"run"})
	require.NoError(t, err)
	help, _, err := cli(t, "", "run", "--help")
	require.NoError(t, err)
	check := func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" || strings.HasPrefix(f.Name, "sandbox") {
			return // the local sandbox is for trying things out, not for containers
		}
		keys := f.Annotations[envAnnotation]
		if !assertf(t, len(keys) == 1, "--%s has no environment variable", f.Name) {
			return
		}
		require.Contains(t, help, "(env "+keys[0]+")", "--help shows --%s's variable", f.Name)
	}
	cmd.LocalFlags().VisitAll(check)
	cmd.InheritedFlags().VisitAll(check)
}

func assertf(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

func TestFlagsWinOverEnvironmentWhichWinsOverDefaults(t *testing.T) {
	t.Setenv("KSYNC_TEST_A", "7")
	t.Setenv("KSYNC_TEST_B", "8")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	a := fs.Int("a", 1, "a")
	b := fs.Int("b", 1, "b")
	c := fs.Int("c", 1, "c")
	bindEnv(fs, "a", "KSYNC_TEST_A")
	bindEnv(fs, "b", "KSYNC_TEST_B")
	bindEnv(fs, "c", "KSYNC_TEST_C")
	require.NoError(t, fs.Parse([]string{"--a", "3"}))
	require.NoError(t, applyEnv(fs))
	require.Equal(t, []int{3, 8, 1}, []int{*a, *b, *c})
	require.True(t, fs.Changed("b"), "a value from the environment counts as set")
}

func TestRunTakesItsSettingsFromTheEnvironment(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	t.Setenv("NATS_URL", srv.ClientURL())
	t.Setenv("KSYNC_STREAM", "ENV_LEADS")
	t.Setenv("KSYNC_DEDUP_WINDOW", "90s")
	t.Setenv("KSYNC_STREAM_REPLICAS", "1")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--sandbox", "--log-level", "error"}, strings.NewReader(""), &strings.Builder{}, &lockedBuffer{})
	}()
	var info *jetstream.StreamInfo
	require.Eventually(t, func() bool {
		st, err := js.Stream(context.Background(), "ENV_LEADS")
		if err != nil {
			return false
		}
		info, err = st.Info(context.Background())
		if err != nil || info.State.Consumers == 0 {
			return false
		}
		_, err = js.Stream(context.Background(), "RUNS")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 90*time.Second, info.Config.Duplicates)
	cancel()
	require.NoError(t, <-done)
}

// writeNATSContext writes a nats CLI context under a fresh XDG_CONFIG_HOME.
func writeNATSContext(t *testing.T, name string, c map[string]any) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "nats", "context"), 0o700))
	data, err := json.Marshal(c)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats", "context", name+".json"), data, 0o600))
}

// startAuthServer starts a server that wants user "ksync" with password pw,
// or the nkey user pub, and has a LEADS stream.
func startAuthServer(t *testing.T, pw, nkeyPub string) *natstest.Server {
	srv := natstest.StartOpts(t, t.TempDir(), -1, func(o *server.Options) {
		o.Users = []*server.User{{Username: "ksync", Password: pw}}
		if nkeyPub != "" {
			o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}}
		}
	})
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("ksync", pw))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"leads.>"}})
	require.NoError(t, err)
	return srv
}

func TestNATSContextSuppliesURLUserAndPassword(t *testing.T) {
	srv := startAuthServer(t, "ctx-pass", "")
	writeNATSContext(t, "staging", map[string]any{"url": srv.ClientURL(), "user": "ksync", "password": "ctx-pass"})

	out, _, err := cli(t, `{"id":"c-1","name":"Jane"}`, "publish", "--context", "staging")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event")

	t.Setenv("NATS_CONTEXT", "staging")
	out, _, err = cli(t, `{"id":"c-2","name":"Jane"}`, "publish")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event")

	// A flag overrides the context's setting.
	_, _, err = cli(t, `{"id":"c-3","name":"Jane"}`, "publish", "--nats-password", "wrong")
	require.ErrorContains(t, err, "connect to NATS")
	require.NotContains(t, err.Error(), "wrong")
	require.NotContains(t, err.Error(), "ctx-pass")
}

func TestNATSContextTLSAndFileSettingsFillTheFlags(t *testing.T) {
	writeNATSContext(t, "tls", map[string]any{
		"url": "tls://nats-1:4222", "ca": "/etc/ca.pem", "cert": "~/client.pem", "key": "/etc/client.key",
		"creds": "/etc/u.creds", "nkey": "/etc/u.nk", "token": "t0k", "jetstream_domain": "hub",
	})
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	a := &app{stdout: &strings.Builder{}}
	root := a.rootCommand()
	root.SetArgs([]string{"--context", "tls", "--nats-key", "/override.key", "version"})
	require.NoError(t, root.Execute())
	require.Equal(t, "tls://nats-1:4222", a.natsURL)
	require.Equal(t, []string{"/etc/ca.pem", filepath.Join(home, "client.pem"), "/override.key", "/etc/u.creds", "/etc/u.nk"},
		[]string{a.natsCA, a.natsCert, a.natsKey, a.natsCreds, a.natsNkey})
	require.Equal(t, natsExtras{token: "t0k", jsDomain: "hub"}, a.nats)
}

func TestAMissingOrUnsupportedNATSContextIsAUsageError(t *testing.T) {
	writeNATSContext(t, "nsc", map[string]any{"nsc": "nsc://op/acc/user"})
	_, _, err := cli(t, "", "publish", "--context", "nowhere")
	require.ErrorContains(t, err, `--context "nowhere": no such context`)
	require.Equal(t, 2, exitCode(err))
	_, _, err = cli(t, "", "publish", "--context", "nsc")
	require.ErrorContains(t, err, "nsc not supported")
	require.Equal(t, 2, exitCode(err))
}

func TestNATSUserPasswordAndNkeyFromTheEnvironment(t *testing.T) {
	kp, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := kp.PublicKey()
	require.NoError(t, err)
	seed, err := kp.Seed()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	srv := startAuthServer(t, "env-pass", pub)
	t.Setenv("NATS_URL", srv.ClientURL())

	_, _, err = cli(t, `{"id":"e-0","name":"Jane"}`, "publish")
	require.ErrorContains(t, err, "connect to NATS", "the server wants credentials")

	t.Setenv("NATS_USER", "ksync")
	t.Setenv("NATS_PASSWORD", "env-pass")
	out, _, err := cli(t, `{"id":"e-1","name":"Jane"}`, "publish")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event")

	t.Setenv("NATS_USER", "")
	t.Setenv("NATS_PASSWORD", "")
	t.Setenv("NATS_NKEY", seedFile)
	out, _, err = cli(t, `{"id":"e-2","name":"Jane"}`, "publish")
	require.NoError(t, err)
	require.Contains(t, out, "published 1 event")

	t.Setenv("NATS_NKEY", "")
	t.Setenv("NATS_PASSWORD", "lonely")
	_, _, err = cli(t, `{"id":"e-3","name":"Jane"}`, "publish")
	require.ErrorContains(t, err, "--nats-user and --nats-password")
	require.Equal(t, 2, exitCode(err))
}

func TestBadFlagValuesOfOtherCommandsAreUsageErrorsToo(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"publish", "--timeout", "0s", "x.json"}, `--timeout "0s": want a duration above zero`},
		{[]string{"demo", "--wait", "-1s"}, `--wait "-1s": want a duration above zero`},
		{[]string{"runs", "list", "--limit", "ten"}, `--limit "ten": want a whole number`},
		{[]string{"publish", "--log-format", "xml"}, `--log-format "xml": want json, console or auto`},
	} {
		_, _, err := cli(t, "", c.args...)
		require.ErrorContains(t, err, c.want)
		require.Equal(t, 2, exitCode(err), c.args)
	}
}

func TestDemoIgnoresTheNATSSettingsOfTheEnvironment(t *testing.T) {
	writeNATSContext(t, "prod", map[string]any{"url": "nats://127.0.0.1:1", "user": "u", "password": "p", "jetstream_domain": "hub"})
	t.Setenv("NATS_CONTEXT", "prod")
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	out, _, err := cli(t, "", "demo", "--log-level", "warn", "--log-format", "json")
	require.NoError(t, err)
	require.Contains(t, out, "events processed   24 of 24")
}
