package admin_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// A run's page shows its trace id, linked to the tracing UI by TraceURL.
func TestARunsPageLinksItsTrace(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	l, err := runlog.New(context.Background(), js, runlog.Config{})
	require.NoError(t, err)
	now := time.Now()
	for _, r := range []runlog.Record{
		{ID: "LEADS-1-1-default", Workflow: "default", StreamSeq: 1, Started: now, Ended: now, Status: runlog.Succeeded, TraceID: traceID},
		{ID: "LEADS-2-1-default", Workflow: "default", StreamSeq: 2, Started: now, Ended: now, Status: runlog.Succeeded},
	} {
		require.NoError(t, l.Write(context.Background(), r))
	}
	page := func(traceURL func(string) string, run string) string {
		s, err := admin.New(admin.Config{Addr: "127.0.0.1:0", Conn: nc, JetStream: js, Workflows: started{}, TraceURL: traceURL})
		require.NoError(t, err)
		require.NoError(t, s.Start())
		defer func() { require.NoError(t, s.Shutdown(context.Background())) }()
		resp, err := http.Get("http://" + s.Addr() + "/runs/" + run)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	link := func(id string) string { return "https://jaeger.example/trace/" + id }
	require.Contains(t, page(link, "LEADS-1-1-default"), `<a href="https://jaeger.example/trace/`+traceID+`" rel="noreferrer" target="_blank">`+traceID+`</a>`)
	unlinked := page(nil, "LEADS-1-1-default")
	require.Contains(t, unlinked, traceID)
	require.NotContains(t, unlinked, "jaeger")
	require.NotContains(t, page(link, "LEADS-2-1-default"), "jaeger", "an untraced run has no trace")
}
