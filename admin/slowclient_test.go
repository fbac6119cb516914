package admin_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/admin"
	"github.com/kustomer-sync/kustomer-sync/natstest"
)

// startWith starts an admin server with cfg (its NATS, workflows and
// address filled in) and returns its address.
func startWith(t *testing.T, cfg admin.Config) string {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	cfg.Addr, cfg.Conn, cfg.JetStream, cfg.Workflows = "127.0.0.1:0", nc, js, started{}
	s, err := admin.New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() { require.NoError(t, s.Shutdown(t.Context())) })
	return s.Addr()
}

// slowLogin opens a connection to addr that sends the headers of a login
// and the first bytes of its body, and no more.
func slowLogin(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = io.WriteString(conn, "POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"+
		"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=")
	require.NoError(t, err)
	return conn
}

// A client that sends a login's body slowly (the login page needs no
// token) is disconnected once ReadTimeout has passed; it does not hold a
// connection open for as long as it likes.
func TestAClientSendingABodySlowlyIsDisconnectedAfterTheReadTimeout(t *testing.T) {
	t.Parallel()
	addr := startWith(t, admin.Config{Token: "admin-tok-1", ReadTimeout: 200 * time.Millisecond})
	conn := slowLogin(t, addr)
	// The bound of the test, far above the server's: without a read timeout
	// the server waits for the rest of the body forever.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err := io.Copy(io.Discard, conn)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept the slow connection open")
}

// Connections beyond MaxConns wait to be accepted until one closes: slow
// clients cannot open as many as they like.
func TestConnectionsBeyondTheCapWaitUntilOneCloses(t *testing.T) {
	t.Parallel()
	addr := startWith(t, admin.Config{Token: "admin-tok-1", MaxConns: 2, ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute})
	first, _ := slowLogin(t, addr), slowLogin(t, addr)

	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	select {
	case code := <-answered:
		t.Fatalf("a third connection was served (%d) while two were open with a cap of 2", code)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, first.Close())
	select {
	case code := <-answered:
		require.Equal(t, http.StatusOK, code)
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting connection was not served once one closed")
	}
}
