package worker

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestEmbeddedServerLogsThroughTheGivenLoggerAsJSON(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s, err := StartEmbedded(EmbeddedConfig{
		Addr:     "127.0.0.1:0",
		StoreDir: t.TempDir(),
		Logger:   zerolog.New(&logs).Level(zerolog.DebugLevel),
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
