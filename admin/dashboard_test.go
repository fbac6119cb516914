package admin_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
)

// deadLetter writes a dead letter of workflow; seq makes it distinct.
func deadLetter(t *testing.T, js jetstream.JetStream, workflow string, seq uint64) {
	t.Helper()
	r := dlq.Record{
		Workflow: workflow, Class: outcome.Validation, Error: "validation: externalId: required, but blank", Attempts: 1,
		Subject: "leads." + workflow, StreamSeq: seq, MsgID: fmt.Sprint("lead-", seq), LastFailure: time.Now(),
		Payload: fmt.Appendf(nil, `{"n":%d}`, seq),
	}
	require.NoError(t, dlq.Publish(t.Context(), js, dlq.Subject(workflow), r))
}

var (
	confirmFormRE = regexp.MustCompile(`(?s)<form method="post" action="(/dead-letters/[a-z]+)" class="confirm">(.*?)</form>`)
	hiddenRE      = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	nextRE        = regexp.MustCompile(`<input type="hidden" name="next" value="([^"]*)">`)
)

// confirmForm returns the action and the fields the confirm page's button
// posts.
func confirmForm(t *testing.T, page string) (string, url.Values) {
	t.Helper()
	m := confirmFormRE.FindStringSubmatch(page)
	require.NotNil(t, m, "a confirm form in %s", page)
	form := url.Values{}
	for _, in := range hiddenRE.FindAllStringSubmatch(m[2], -1) {
		form.Add(in[1], html.UnescapeString(in[2]))
	}
	return m[1], form
}

func entryIDs(t *testing.T, js jetstream.JetStream) []uint64 {
	t.Helper()
	st, err := dlq.OpenStore(t.Context(), js, "")
	require.NoError(t, err)
	recs, err := st.List(t.Context(), dlq.Filter{})
	require.NoError(t, err)
	var ids []uint64
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestPurgeAllMatchingDeletesOnlyTheEntriesTheConfirmPageListed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		filter url.Values
	}{
		{"every entry", url.Values{}},                    // the filter is empty: a purge of the whole stream
		{"a filter", url.Values{"workflow": {"signup"}}}, // the entries are listed, then deleted
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base, js := startServerJS(t, "")
			_, err := dlq.EnsureStream(t.Context(), js, dlq.StreamConfig{})
			require.NoError(t, err)
			deadLetter(t, js, "signup", 1)
			deadLetter(t, js, "signup", 2)
			c := noRedirects()
			resp, page := do(t, c, "GET", base+"/dead-letters?"+tc.filter.Encode(), nil, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			csrf := csrfRE.FindStringSubmatch(page)[1]
			// purgeAll posts "purge all matching" the filter, with more
			// fields; it answers the page, which asks first.
			purgeAll := func(more url.Values) string {
				form := url.Values{"csrf": {csrf}, "all": {"1"}}
				for _, values := range []url.Values{tc.filter, more} {
					for k, v := range values {
						form[k] = v
					}
				}
				resp, page := do(t, c, "POST", base+"/dead-letters/purge", form, nil)
				require.Equal(t, http.StatusOK, resp.StatusCode)
				return page
			}

			// "Purge all 2 matching…" asks first, with the count.
			page = purgeAll(nil)
			require.Contains(t, page, "Purge 2 dead letters?")
			action, confirmed := confirmForm(t, page)
			require.Equal(t, "/dead-letters/purge", action)

			// An entry dead-lettered while the operator reads the page is
			// not one they confirmed: it stays.
			deadLetter(t, js, "signup", 3)
			require.Equal(t, []uint64{1, 2, 3}, entryIDs(t, js))
			resp, _ = do(t, c, "POST", base+action, confirmed, nil)
			require.Equal(t, http.StatusSeeOther, resp.StatusCode)
			require.Equal(t, "/dead-letters?purged=2", resp.Header.Get("Location"))
			require.Equal(t, []uint64{3}, entryIDs(t, js))

			// A confirmation that names no entries (a page from before, a
			// hand-made form) deletes nothing: it asks again, listing what
			// matches now.
			page = purgeAll(url.Values{"confirm": {"1"}})
			require.Contains(t, page, "Purge 1 dead letter?")
			_, again := confirmForm(t, page)
			require.Equal(t, "3", again.Get("ids"))
			require.Equal(t, []uint64{3}, entryIDs(t, js))
		})
	}
}

func TestLoginSendsOnlyToAPathOfThisServer(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token"
	base := startServer(t, token)
	c := noRedirects()
	resp, page := do(t, c, "GET", base+"/login", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	csrf := csrfRE.FindStringSubmatch(page)[1]
	for _, tc := range []struct{ next, want string }{
		{"/dead-letters?class=validation&q=No+Id", "/dead-letters?class=validation&q=No+Id"},
		{"/runs/r-1", "/runs/r-1"},
		{"/", "/"},
		{"", "/"},
		// Browsers drop tabs and newlines anywhere in a URL, and leading
		// spaces and control characters: each of these goes to another host.
		{"/\t/evil.example", "/"},
		{"/\n/evil.example", "/"},
		{"/\r\n/evil.example", "/"},
		{"/\t\\evil.example", "/"},
		{"\t//evil.example", "/"},
		{" //evil.example", "/"},
		{"\x00//evil.example", "/"},
		{"/\x7f/evil.example", "/"},
		{"//evil.example", "/"},
		{"/\\evil.example", "/"},
		{"https://evil.example/", "/"},
		{"javascript:alert(1)", "/"},
		{"evil.example", "/"},
	} {
		// The login page carries next to its form, then sends there.
		resp, page := do(t, c, "GET", base+"/login?next="+url.QueryEscape(tc.next), nil, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		m := nextRE.FindStringSubmatch(page)
		require.NotNil(t, m, "next %q", tc.next)
		require.Equal(t, tc.want, html.UnescapeString(m[1]), "next %q", tc.next)
		resp, _ = do(t, c, "POST", base+"/login", url.Values{"token": {token}, "next": {tc.next}, "csrf": {csrf}}, nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, "next %q", tc.next)
		require.Equal(t, tc.want, resp.Header.Get("Location"), "next %q", tc.next)
	}
}

func TestWithoutATokenOnlyLoopbackHostsReachTheDashboard(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	u, err := url.Parse(base)
	require.NoError(t, err)
	port := u.Port()
	c := noRedirects()

	// A name that resolves to 127.0.0.1 (DNS rebinding) would make another
	// site same-origin with the dashboard: its requests are refused.
	for _, host := range []string{"evil.example", "evil.example:" + port, "127.0.0.1.evil.example:" + port,
		"localhost.evil.example", "10.0.0.1:" + port, "[2001:db8::1]:" + port} {
		for _, path := range []string{"/", "/dead-letters", "/status", "/login", "/style.css", "/metrics/x"} {
			resp, body := do(t, c, "GET", base+path, nil, http.Header{"Host": {host}})
			require.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode, "%s %s", host, path)
			require.Contains(t, body, "loopback", "%s %s", host, path)
		}
		resp, _ := do(t, c, "POST", base+"/dead-letters/purge", url.Values{"all": {"1"}}, http.Header{"Host": {host}})
		require.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode, host)
		// The probes and the metrics answer whatever the Host.
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, _ := do(t, c, "GET", base+path, nil, http.Header{"Host": {host}})
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s", host, path)
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "127.0.0.1", "127.8.9.10:" + port, "localhost:" + port,
		"LocalHost", "[::1]:" + port, "[::1]"} {
		resp, _ := do(t, c, "GET", base+"/dead-letters", nil, http.Header{"Host": {host}})
		require.Equal(t, http.StatusOK, resp.StatusCode, host)
	}

	// With a token, the token guards the dashboard, whatever the Host.
	withToken := startServer(t, "s3cret-token")
	resp, _ := do(t, c, "GET", withToken+"/dead-letters", nil, http.Header{"Host": {"admin.example.com"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/login?next=%2Fdead-letters", resp.Header.Get("Location"))
}

// A dead letter that cannot succeed without a change elsewhere (the event
// itself is invalid) has no one-click Retry: the page says why; one that
// can, keeps it.
func TestAnInvalidEventDeadLetterHasNoOneClickRetryAndSaysWhy(t *testing.T) {
	t.Parallel()
	base, js := startServerJS(t, "")
	_, err := dlq.EnsureStream(t.Context(), js, dlq.StreamConfig{})
	require.NoError(t, err)
	require.NoError(t, dlq.Publish(t.Context(), js, dlq.Subject("signup"), dlq.Record{
		Workflow: "signup", Class: outcome.InvalidEvent, Error: "worker: the event is not valid JSON", Attempts: 1,
		Subject: "leads.signup", StreamSeq: 1, LastFailure: time.Now(), Payload: []byte("not json"),
	}))
	deadLetter(t, js, "signup", 2) // validation

	resp, page := do(t, noRedirects(), "GET", base+"/dead-letters", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	entries := regexp.MustCompile(`(?s)<article class="card entry" id="entry-(\d+)">(.*?)</article>`).FindAllStringSubmatch(page, -1)
	require.Len(t, entries, 2)
	for _, e := range entries {
		switch e[1] {
		case "1":
			require.NotContains(t, e[2], `class="retry"`, "no one-click Retry for an invalid event")
			require.Contains(t, e[2], "the event itself is invalid, so it would fail the same way")
			require.Contains(t, e[2], "kustomer-sync dlq replay 1")
		case "2":
			require.Contains(t, e[2], `class="retry"`)
			require.Contains(t, e[2], "fails again unless the workflow was fixed since")
		}
	}
}

// The overview refreshes itself; its reader can pause that (?refresh=off)
// and resume it, keeping the rest of the query.
func TestTheOverviewsRefreshCanBePausedAndResumed(t *testing.T) {
	t.Parallel()
	base := startServer(t, "")
	meta := regexp.MustCompile(`<meta http-equiv="refresh" content="(\d+)">`)
	toggle := regexp.MustCompile(`<a class="refresh-toggle" href="([^"]*)">(\w+)</a>`)

	// No leads stream yet: the overview says so, and refreshes until there is.
	_, page := do(t, noRedirects(), "GET", base+"/", nil, nil)
	require.Contains(t, page, "<h1>Overview</h1>")
	require.Equal(t, "5", meta.FindStringSubmatch(page)[1])
	link := toggle.FindStringSubmatch(page)
	require.Equal(t, []string{"/?refresh=off", "pause"}, link[1:])

	_, page = do(t, noRedirects(), "GET", base+link[1], nil, nil)
	require.Contains(t, page, "<h1>Overview</h1>")
	require.NotRegexp(t, meta, page)
	require.Contains(t, page, "Refresh paused")
	link = toggle.FindStringSubmatch(page)
	require.Equal(t, []string{"/", "resume"}, link[1:])

	// A page that does not refresh itself has neither.
	_, page = do(t, noRedirects(), "GET", base+"/dead-letters?refresh=off&workflow=signup", nil, nil)
	require.NotRegexp(t, meta, page)
	require.NotRegexp(t, toggle, page)
}
