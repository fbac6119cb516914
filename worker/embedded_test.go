package worker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/worker"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func TestEmbeddedServerLogsThroughTheGivenLoggerAsJSON(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s, err := worker.StartEmbedded(worker.EmbeddedConfig{
		Addr:     "127.0.0.1:0",
		StoreDir: t.TempDir(),
		Logger:   zerolog.New(&logs).Level(zerolog.DebugLevel),
	})
	require.NoError(t, err)
	s.Shutdown()
	s.WaitForShutdown()

	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(logs.Bytes()))
	for sc.Scan() {
		var line map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), "not a JSON log line: %s", sc.Text())
		require.Equal(t, "nats-server", line["component"])
		lines++
	}
	require.Positive(t, lines, "the server's start-up notices reach the logger")
}
