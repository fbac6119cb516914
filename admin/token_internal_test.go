package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// Not parallel: it swaps compareDigests, which every token check calls.
func TestTokenChecksCompareDigestsWhateverTheLengths(t *testing.T) {
	var sizes [][2]int
	orig := compareDigests
	compareDigests = func(a, b []byte) bool {
		sizes = append(sizes, [2]int{len(a), len(b)})
		return orig(a, b)
	}
	t.Cleanup(func() { compareDigests = orig })
	pages, err := parsePages()
	require.NoError(t, err)

	checks := 0
	for _, token := range []string{"t", "s3cret-token", strings.Repeat("long-token", 20)} {
		s := &Server{cfg: Config{Token: token}, csrfKey: make([]byte, 32), pages: pages}
		for _, guess := range []string{"", "x", token[:len(token)-1], token, token + "x", strings.Repeat("y", 500)} {
			want := guess == token
			bearer := httptest.NewRequest("GET", "/status", nil)
			bearer.Header.Set("Authorization", "Bearer "+guess)
			require.Equal(t, want, s.authorized(bearer), "bearer %q for %q", guess, token)

			digest := s.tokenDigest()
			if !want {
				digest = guess
			}
			cookie := httptest.NewRequest("GET", "/status", nil)
			cookie.AddCookie(&http.Cookie{Name: sessionCookie, Value: digest})
			require.Equal(t, want, s.authorized(cookie), "cookie %q for %q", digest, token)

			login := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"token": {guess}}.Encode()))
			login.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			s.login(rec, login)
			require.Equal(t, map[bool]int{true: http.StatusSeeOther, false: http.StatusUnauthorized}[want], rec.Code, "login %q for %q", guess, token)
			checks += 3
		}
	}
	// Every check compared two SHA-256 digests, never the strings: the
	// time it takes does not tell the token's length.
	require.Len(t, sizes, checks)
	for _, n := range sizes {
		require.Equal(t, [2]int{32, 32}, n)
	}
}

// A server made without timeouts or a cap gets the defaults: no client can
// keep a connection for as long as it likes.
func TestTheServerBoundsConnectionsByDefault(t *testing.T) {
	srv := natstest.Start(t)
	nc, js := srv.Connect(t)
	s, err := New(Config{Addr: "127.0.0.1:0", Conn: nc, JetStream: js, Workflows: noWorkflows{}})
	require.NoError(t, err)
	require.Equal(t, ReadHeaderTimeoutDefault, s.srv.ReadHeaderTimeout)
	require.Equal(t, ReadTimeoutDefault, s.srv.ReadTimeout)
	require.Equal(t, IdleTimeoutDefault, s.srv.IdleTimeout)
	require.Equal(t, MaxConnsDefault, s.cfg.MaxConns)
}

type noWorkflows struct{}

func (noWorkflows) Workflows() []worker.WorkflowState { return nil }

// The scheme of Authorization is case-insensitive (RFC 7235), as HTTP
// ingest takes it too.
func TestTheAdminTokenIsTakenWhateverTheSchemesCase(t *testing.T) {
	t.Parallel()
	s := &Server{cfg: Config{Token: "admin-tok-1"}}
	for _, scheme := range []string{"Bearer ", "bearer ", "BEARER "} {
		r := httptest.NewRequest("GET", "/status", nil)
		r.Header.Set("Authorization", scheme+"admin-tok-1")
		require.True(t, s.authorized(r), scheme)
	}
}
