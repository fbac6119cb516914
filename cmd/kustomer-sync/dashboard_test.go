package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/kustomer-sync/kustomer-sync/kustomer/kustomertest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/mapping/mappingtest"
	"github.com/kustomer-sync/kustomer-sync/natstest"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

const dashboardConfig = `workflows:
  - name: signup
    subject: "signups.>"
    required: [externalId]
    inputs:
      externalId: "{{trigger.%s}}"
      name: "{{trigger.name}}"
      emails: "{{trigger.email}}"
`

func TestDashboardRetriesADeadLetterAfterTheConfigIsFixedInARealBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-dashboard"})
	// The workflow reads the lead's id from a field the events do not have:
	// every event fails validation (its required externalId is blank).
	config := writeConfig(t, fmt.Sprintf(dashboardConfig, "lead_id"))
	addr := adminAddr(t)
	base := "http://" + addr
	// The same arguments restart it after the fix, on the same address.
	args := []string{"--nats-url", srv.ClientURL(), "--kustomer-base-url", sb.URL, "--kustomer-api-key-file", writeKey(t, "sk-dashboard"),
		"--config", config, "--admin-addr", addr, "--replica-id", "dashboard"}
	r := startRun(t, args...)
	waitReadyz(t, base, http.StatusOK, r)

	// The overview refreshes itself until the replica's heartbeat says so.
	do(t, ctx, chromedp.Navigate(base+"/"), visible(`article.workflow .state-running`))
	// Paused before anything is read: a page that reloads itself under a
	// query cuts it short.
	pause := read(t, ctx, attr(`footer a.refresh-toggle`, "href"))
	require.Equal(t, "/?refresh=off", pause.Value)
	do(t, ctx, chromedp.Navigate(base+pause.Value), visible(`article.workflow .state-running`))
	require.Contains(t, read(t, ctx, innerText(`footer`)), "Refresh paused")
	text := read(t, ctx, innerText(`article.workflow`))
	require.Contains(t, text, "signup")
	require.Contains(t, text, "running")
	screenshots(t, ctx, "overview")

	// A lead whose name tries HTML injection, and that fails validation.
	const name = `Eve <img src=x onerror=alert(1)><b>Bold</b>`
	m := nats.NewMsg("signups.web")
	m.Data = fmt.Appendf(nil, `{"id":"lead-42","name":%q,"email":"eve@example.com"}`, name)
	m.Header.Set(nats.MsgIdHdr, "event-42")
	_, err := js.PublishMsg(t.Context(), m)
	require.NoError(t, err)

	do(t, ctx, chromedp.Navigate(base+"/dead-letters"), visible(`article.entry`), click(`article.entry details summary`))
	text = read(t, ctx, innerText(`article.entry`))
	injected := read(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main b, pre.payload *").length`))
	require.Contains(t, text, "validation")
	require.Contains(t, text, "externalId")
	require.Contains(t, text, `<img src=x onerror=alert(1)><b>Bold</b>`, "the payload shows the name as text")
	require.Zero(t, injected, "no element comes from the lead's name")
	require.NotContains(t, text, "sk-dashboard")
	screenshots(t, ctx, "dead-letters")

	// Retry the failed run before the fix: it fails again, and the page
	// says why.
	do(t, ctx, chromedp.Navigate(base+"/runs?status=failed"), visible(`table.runs button`),
		click(`table.runs button`), visible(`article.outcome`), gone(`article.outcome .pending`))
	text = read(t, ctx, innerText(`main`))
	require.Contains(t, text, "Failed again: dead letter #2")
	require.Contains(t, text, "externalId: required, but blank")

	// Fix the workflow: restart the worker with the field the events have.
	r.stop()
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, dashboardConfig, "id"), 0o600))
	r = startRun(t, args...)
	waitReadyz(t, base, http.StatusOK, r)

	do(t, ctx, chromedp.Navigate(base+"/dead-letters"), visible(`article.entry button.retry`),
		click(`article.entry button.retry`), visible(`article.outcome .status-succeeded`))
	text = read(t, ctx, innerText(`main`))
	runLink := read(t, ctx, attr(`article.outcome a[href^="/runs/"]`, "href")).Value
	require.Contains(t, text, "Republished 1 dead letter")
	require.Contains(t, text, "created")
	screenshots(t, ctx, "retry")

	customers := sb.Sandbox.Customers()
	require.Len(t, customers, 1)
	require.Equal(t, "lead-42", customers[0].Attributes["externalId"])
	require.Equal(t, name, customers[0].Attributes["name"])

	do(t, ctx, chromedp.Navigate(base+runLink), visible(`table`))
	text = read(t, ctx, innerText(`main`))
	require.Contains(t, text, customers[0].ID)
	require.Contains(t, text, "succeeded")
	require.Contains(t, text, "Replay of")
	screenshots(t, ctx, "run")

	// The run log finds both runs of the lead by its email; the dead
	// letters are gone.
	do(t, ctx, chromedp.Navigate(base+"/runs?q=eve%40example.com"), visible(`table.runs`))
	rows := read(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("table.runs tbody tr").length`))
	require.Equal(t, 3, rows, "the first run, its failed retry and the retry that worked")
	screenshots(t, ctx, "runs")
	do(t, ctx, chromedp.Navigate(base+"/dead-letters"), visible(`p.empty`),
		chromedp.Navigate(base+"/?refresh=off"), visible(`article.workflow`))
	text = read(t, ctx, innerText(`article.workflow`))
	require.Contains(t, text, "3 runs")
	screenshots(t, ctx, "overview-after")

	// Two leads without an id: "Retry all matching" asks first, with the
	// count, then shows each new failure and why; "Purge all matching" too.
	for i := range 2 {
		_, err := js.Publish(t.Context(), "signups.web", fmt.Appendf(nil, `{"name":"No Id %d","email":"noid%d@example.com"}`, i, i))
		require.NoError(t, err)
	}
	do(t, ctx, chromedp.Navigate(base+"/dead-letters?class=validation&q=No+Id"), visible(`article.entry + article.entry`),
		click(`.bulk button:not(.danger)`), visible(`form.confirm button`))
	text = read(t, ctx, innerText(`main`))
	require.Contains(t, text, "Retry 2 dead letters?")
	require.Contains(t, text, "class validation, containing No Id")
	screenshots(t, ctx, "retry-confirm")
	do(t, ctx, click(`form.confirm button`), visible(`article.outcome + article.outcome`))
	do(t, ctx, gone(`article.outcome .pending`)) // every run is in
	text = read(t, ctx, innerText(`main`))
	require.Equal(t, 2, strings.Count(text, "Failed again: dead letter #"), text)
	require.Contains(t, text, "externalId: required, but blank")
	screenshots(t, ctx, "retry-failed")

	do(t, ctx, chromedp.Navigate(base+"/dead-letters?class=validation"), visible(`article.entry + article.entry`),
		click(`.bulk button.danger`), visible(`form.confirm button.danger`))
	require.Contains(t, read(t, ctx, innerText(`main`)), "Purge 2 dead letters?")
	do(t, ctx, click(`form.confirm button.danger`), visible(`p.notice`))
	require.Contains(t, read(t, ctx, innerText(`main`)), "Purged 2 dead letters.")
	r.stop()
}

func TestDashboardAsksForTheAdminTokenAndLogsInInARealBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-dashboard"})
	config := writeConfig(t, fmt.Sprintf(dashboardConfig, "id"))
	const token = "admin-token-7f3a9c"
	r, _, base := startAdminRun(t, srv.ClientURL(), sb.URL, "sk-dashboard", "--config", config, "--admin-token", token, "--replica-id", "login")
	waitReadyz(t, base, http.StatusOK, r)

	// A page asked for without the token shows the login form instead.
	do(t, ctx, chromedp.Navigate(base+"/runs?status=failed"), visible(`form[action="/login"] input[name=token]`))
	require.Positive(t, read(t, ctx, chromedp.Evaluate[int](`document.styleSheets.length ? document.styleSheets[0].cssRules.length : 0`)),
		"the login page has its stylesheet")
	screenshots(t, ctx, "login")
	do(t, ctx, chromedp.SendKeys(`input[name=token]`, "not-the-token"), click(`form[action="/login"] button`),
		visible(`p.alert`))
	require.Equal(t, "That is not the admin token.", read(t, ctx, innerText(`p.alert`)))

	// The right token: back to the page first asked for, and the session
	// lasts for the next pages.
	do(t, ctx, chromedp.SendKeys(`input[name=token]`, token), click(`form[action="/login"] button`),
		visible(`table.runs, p.empty`))
	require.Equal(t, "/runs", read(t, ctx, chromedp.Evaluate[string](`location.pathname`)))
	do(t, ctx, chromedp.Navigate(base+"/?refresh=off"), visible(`article.workflow`))
	html := read(t, ctx, outerHTML(`html`))
	require.NotContains(t, html, token, "the token is in no page")
	require.Empty(t, read(t, ctx, chromedp.Evaluate[string](`document.cookie`)), "the session cookie is HttpOnly")
}

// The run list says why a run failed and how many of its items succeeded,
// as `runs list` does; a failed run links to its dead letter and back; a
// run's page shows each item's notes (what an update did not send) and its
// bulk job.
func TestDashboardShowsWhyARunFailedItsDeadLetterAndItsItemsNotesInARealBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-dashboard"})
	r, _, base := startAdminRun(t, srv.ClientURL(), sb.URL, "sk-dashboard", "--config", mappingtest.Path("match-update"), "--replica-id", "reasons")
	waitReadyz(t, base, http.StatusOK, r)

	publish := func(id, body string) {
		m := nats.NewMsg("leads.web")
		m.Data = []byte(body)
		m.Header.Set(nats.MsgIdHdr, id)
		_, err := js.PublishMsg(t.Context(), m)
		require.NoError(t, err)
	}
	publish("e-1", `{"id":"m-1","name":"Bo","emails":["bo@example.com"]}`)
	// e-2 is published once e-1's customer exists, so it is e-2 that finds
	// that customer by email and updates it (events run concurrently).
	require.Eventually(t, func() bool { return sb.Sandbox.CountByExternalID()["m-1"] == 1 }, 30*time.Second, 20*time.Millisecond)
	publish("e-2", `{"id":"m-2","name":"Bo D","emails":["bo@example.com"]}`)
	publish("e-3", `{"id":"m-3","name":"Al","emails":["not-an-email"]}`)
	// A bulk-mode run, as the run log holds it.
	l, err := runlog.New(t.Context(), js, runlog.Config{})
	require.NoError(t, err)
	now := time.Now()
	require.NoError(t, l.Write(t.Context(), runlog.Record{ID: "LEADS-99-1-bulk", Workflow: "bulk", EventID: "e-99", Subject: "leads.bulk",
		StreamSeq: 99, Started: now, Ended: now.Add(time.Second), Status: runlog.Succeeded,
		Items: []runlog.Item{{Index: 0, Outcome: outcome.Created, CustomerID: "ffffffffffffffffffffffff", Attempts: 1, BulkJob: "bulk-job-7"}}}))

	// The pages do not refresh themselves: wait for the three events' runs.
	require.Eventually(t, func() bool {
		runs, err := l.List(t.Context(), runlog.Filter{})
		return err == nil && len(runs) == 4
	}, 30*time.Second, 20*time.Millisecond)
	do(t, ctx, chromedp.Navigate(base+"/runs?status=failed"), visible(`table.runs tbody tr`))
	row := read(t, ctx, innerText(`table.runs tbody tr`))
	require.Contains(t, row, `#0: mapping: emails[0].email: "not-an-email" is not an email address`, "the reason, as `runs list` gives it")
	require.Equal(t, "0/1", read(t, ctx, innerText(`table.runs tbody tr td[data-label=Items]`)))
	do(t, ctx, chromedp.Navigate(base+"/runs"), visible(`table.runs tbody tr`))
	require.Equal(t, 4, read(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("table.runs tbody tr").length`)))
	screenshots(t, ctx, "runs-reasons")

	// The failed run's dead letter, and back. Each link is followed by
	// navigating to it: a click's navigation races the next query.
	follow := func(link string) {
		t.Helper()
		href := read(t, ctx, attr(link, "href"))
		require.True(t, href.Exists, "a link %s", link)
		do(t, ctx, chromedp.Navigate(base+href.Value))
	}
	do(t, ctx, chromedp.Navigate(base+"/runs?status=failed"), visible(`table.runs a.deadletter-link`))
	follow(`table.runs a.deadletter-link`)
	do(t, ctx, visible(`article.entry`))
	require.Equal(t, 1, read(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("article.entry").length`)), "only the run's dead letter")
	require.Contains(t, read(t, ctx, innerText(`article.entry`)), "not-an-email")
	follow(`article.entry dd a[href^="/runs/"]`)
	do(t, ctx, visible(`p.deadletters a`))
	require.Contains(t, read(t, ctx, innerText(`main`)), "failed")
	screenshots(t, ctx, "run-failed")
	follow(`p.deadletters a`)
	do(t, ctx, visible(`article.entry`))
	require.Contains(t, read(t, ctx, innerText(`article.entry`)), "not-an-email")

	// The update's note: the customer kept its own externalId.
	do(t, ctx, chromedp.Navigate(base+"/runs?q=e-2"), visible(`table.runs tbody tr a`))
	follow(`table.runs tbody tr a`)
	do(t, ctx, visible(`main table`))
	require.Equal(t, "not sent by the update: externalId: m-2 (the customer, found by another match key, keeps its own: m-1)",
		read(t, ctx, innerText(`ul.notes li`)))
	screenshots(t, ctx, "run-notes")

	// The overview counts the update, and says its window is since the
	// process started, not an hour it has not lived.
	do(t, ctx, chromedp.Navigate(base+"/?refresh=off"), visible(`article.workflow`))
	card := read(t, ctx, innerText(`article.workflow`))
	require.Contains(t, card, "Created / updated / failed")
	require.Regexp(t, `Created / updated / failed\s*1 / 1 / 1`, card)
	require.Regexp(t, `Last [\dhms]+ \(since start\)\s*3 runs`, card)
	require.NotContains(t, card, "Last hour")
	screenshots(t, ctx, "overview-counts")

	do(t, ctx, chromedp.Navigate(base+"/runs/LEADS-99-1-bulk"), visible(`td.bulk-job`))
	require.Equal(t, "bulk-job-7", read(t, ctx, innerText(`td.bulk-job`)))
	screenshots(t, ctx, "run-bulk")
	r.stop()
}

// Kustomer's 401 pauses every workflow of the replica; the overview says so
// once, naming the workflows it pauses, not once per workflow card and again
// per workflow in this replica's readiness.
func TestTheOverviewShowsARejectedAPIKeyOnceWithTheWorkflowsItPausesInARealBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	srv := natstest.Start(t)
	sb := kustomertest.New(t, sandbox.Config{RatePerMinute: -1, APIKey: "sk-right"})
	r, _, base := startAdminRun(t, srv.ClientURL(), sb.URL, "sk-wrong", "--config", mappingtest.Path("signup-and-import"), "--replica-id", "rejected")
	waitReadyz(t, base, http.StatusServiceUnavailable, r, "workflow signup is paused: Kustomer rejects", "workflow import is paused: Kustomer rejects")
	require.Eventually(t, func() bool {
		_, body := get(t, base+"/status")
		var st statusReport
		if json.Unmarshal([]byte(body), &st) != nil || len(st.Workflows) != 2 {
			return false
		}
		return st.Workflows[0].CredentialsRejected && st.Workflows[1].CredentialsRejected
	}, 30*time.Second, 20*time.Millisecond, "both workflows' heartbeats say the credentials are rejected")

	do(t, ctx, chromedp.Navigate(base+"/?refresh=off"), visible(`article.workflow .state-paused`))
	main := read(t, ctx, innerText(`main`))
	require.Equal(t, 1, strings.Count(main, "401"), "the 401 is shown once:\n%s", main)
	alert := read(t, ctx, innerText(`p.alert.credentials`))
	require.Contains(t, alert, "Kustomer rejects the credentials")
	require.Contains(t, alert, "workflows import, signup")
	require.Contains(t, alert, "401")
	require.Equal(t, 2, read(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("article.workflow .reason strong").length`)),
		"each paused card still says its credentials were rejected")
	require.Contains(t, read(t, ctx, innerText(`.summary`)), "not ready", "the replica is still not ready")
	require.NotContains(t, read(t, ctx, outerHTML(`html`)), "sk-wrong")
	screenshots(t, ctx, "overview-401")
	r.stop()
}
