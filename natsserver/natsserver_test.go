package natsserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestEmbeddedServerLogsThroughTheGivenLoggerAsJSON(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer // read once the server, which logs from its goroutines, has stopped
	s, err := Start(Config{
		Addr:     "127.0.0.1:0",
		StoreDir: t.TempDir(),
		Logger:   zerolog.New(zerolog.SyncWriter(&logs)).Level(zerolog.DebugLevel),
	})
	require.NoError(t, err)
	s.Shutdown()
	s.WaitForShutdown()

	lines := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), "not a JSON log line: %s", sc.Text())
		require.Equal(t, "nats-server", line["component"])
		lines++
	}
	require.Positive(t, lines, "the server's start-up notices reach the logger")
}

func TestEmbeddedServerAcceptsConnectionsWithJetStreamOnceStarted(t *testing.T) {
	t.Parallel()
	s, err := Start(Config{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	nc, err := nats.Connect(s.ClientURL())
	require.NoError(t, err)
	defer nc.Close()
	require.True(t, s.JetStreamEnabled())
}

func TestEmbeddedServerOnATakenPortSaysToPointNatsURLAtTheServerThere(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	_, err = Start(Config{Addr: ln.Addr().String(), StoreDir: t.TempDir()})
	require.Error(t, err)
	require.Contains(t, err.Error(), "--nats-url")
	require.True(t, strings.HasPrefix(err.Error(), "natsserver: "), err.Error())
}

func TestEmbeddedServerRejectsAnAddressWithoutAPort(t *testing.T) {
	t.Parallel()
	_, err := Start(Config{Addr: "localhost", StoreDir: t.TempDir()})
	require.ErrorContains(t, err, `natsserver: embedded NATS address "localhost"`)
}
