package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// run --sandbox keeps NATS and the ledger in --data-dir: the sandbox's
// customers are kept there too, so that after a restart the ledger does not
// point at customers the new sandbox lacks.
func TestRunSandboxKeepsItsCustomersInTheDataDirAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePorts(t, 1)[0])
	args := []string{"--sandbox", "--data-dir", dir, "--embedded-addr", natsAddr, "--admin-addr", "off", "--replica-id", "keep"}
	file := filepath.Join(dir, "sandbox", "customers.json")
	customers := func() []sandbox.Customer {
		sb, err := sandbox.New(sandbox.Config{})
		require.NoError(t, err)
		_, err = sb.LoadFile(file)
		require.NoError(t, err)
		return sb.Customers()
	}
	publish := func(r *inProcessRun, id, body string) {
		var nc *nats.Conn
		require.Eventually(t, func() bool {
			var err error
			nc, err = nats.Connect("nats://" + natsAddr)
			return err == nil
		}, 30*time.Second, 50*time.Millisecond, r.stderr.String())
		defer nc.Close()
		js, err := nc.JetStream()
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			_, err := js.Publish("leads.web", []byte(body), nats.MsgId(id))
			return err == nil
		}, 30*time.Second, 50*time.Millisecond, r.stderr.String())
	}

	r := startRun(t, args...)
	publish(r, "keep-1", `{"name":"Ann","emails":"ann@example.com"}`)
	require.Eventually(t, func() bool { return len(customers()) == 1 }, 30*time.Second, 50*time.Millisecond, r.stderr.String())
	r.stop()
	first := customers()
	require.Len(t, first, 1)
	require.Equal(t, "Ann", first[0].Attributes["name"])

	r = startRun(t, args...)
	publish(r, "keep-2", `{"name":"Bob","emails":"bob@example.com"}`)
	require.Eventually(t, func() bool { return len(customers()) == 2 }, 30*time.Second, 50*time.Millisecond, r.stderr.String())
	r.stop()
	both := customers()
	require.Equal(t, first[0].ID, both[0].ID, "the first run's customer is still there, with its id")
	require.Equal(t, "Bob", both[1].Attributes["name"])
	require.NotEqual(t, both[0].ID, both[1].ID)

	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	require.True(t, json.Valid(raw))
}

func TestRunRefusesSandboxWithAKustomerBaseURL(t *testing.T) {
	t.Parallel()
	_, _, err := cli(t, "", "run", "--sandbox", "--kustomer-base-url", "eu", "--nats-url", "nats://127.0.0.1:1")
	require.Error(t, err)
	require.Equal(t, 2, exitCode(err))
	require.ErrorContains(t, err, `--kustomer-base-url "eu": cannot be used with --sandbox`)
}
