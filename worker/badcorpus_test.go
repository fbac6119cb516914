package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

var corpusConfig = testWorkflow("corpus")

func TestEveryBadEventEndsInTheDeadLetterStreamWithAReasonAndTheWorkerGoesOn(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{
		config: corpusConfig,
		nats:   func(o *server.Options) { o.MaxPayload = 8 << 20 }, // let a 2 MB event reach the stream
	})
	want := map[string]struct {
		class  outcome.Outcome
		reason string
	}{
		"not-json.txt":             {outcome.InvalidEvent, "not valid JSON"},
		"not-utf8.json":            {outcome.InvalidEvent, "not valid UTF-8"},
		"array.json":               {outcome.InvalidEvent, "is a JSON array, not an object"},
		"string.json":              {outcome.InvalidEvent, "is a JSON string, not an object"},
		"empty.json":               {outcome.InvalidEvent, "event is empty"},
		"deeply-nested.json":       {outcome.InvalidEvent, "exceeded max depth"},
		"2mb.txt":                  {outcome.InvalidEvent, "above the limit of 1048576 bytes"},
		"eleven-emails.json":       {outcome.Validation, "emails: 11 items, at most 10 allowed"},
		"invalid-email.json":       {outcome.Validation, `emails[1].email: "jane(at)example.com" is not an email address`},
		"invalid-phone.json":       {outcome.Validation, `phones[1].phone: "call me maybe" is not a phone number`},
		"unknown-custom-keys.json": {outcome.Validation, "Kustomer accepts custom keys in camelCase ending in their type"},
		"nulls.json":               {outcome.Validation, "every input is blank"},
	}
	files, err := filepath.Glob("../testdata/bad/*")
	require.NoError(t, err)
	bySeq := map[uint64]string{}
	for _, f := range files {
		if filepath.Base(f) == "README.md" {
			continue
		}
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		bySeq[h.publish("leads.bad", "", string(data))] = filepath.Base(f)
	}
	bySeq[h.publish("leads.bad", "", strings.Repeat("lorem ipsum ", 2<<20/12+1))] = "2mb.txt"
	require.Len(t, bySeq, len(want), "every corpus file has an expectation")

	// A good event behind the corpus is still processed: nothing stalls.
	good := h.publish("leads.good", "good-1", `{"id":"g-1","name":"Still Works"}`)
	require.Equal(t, runlog.Succeeded, h.waitRun(good).Status)

	var dead []dlq.Record
	require.Eventually(t, func() bool { dead = h.deadLetters(); return len(dead) == len(want) }, 20*time.Second, 20*time.Millisecond)
	for _, d := range dead {
		name := bySeq[d.StreamSeq]
		w, ok := want[name]
		require.True(t, ok, "unexpected dead letter for seq %d", d.StreamSeq)
		require.Equal(t, w.class, d.Class, name)
		require.Contains(t, d.Error, w.reason, name)
		data, err := os.ReadFile(filepath.Join("../testdata/bad", name))
		if err == nil {
			require.Equal(t, data, d.Payload, "%s: payload kept byte for byte", name)
		}
		require.Equal(t, "leads.bad", d.Subject)
		require.Equal(t, "default", d.Workflow)
	}
	require.Len(t, h.sb.Sandbox.Customers(), 1)
	h.waitIdle("default")
	require.Equal(t, 0, h.sb.Sandbox.Stats().BadRequests, "nothing invalid was sent to Kustomer")
}
