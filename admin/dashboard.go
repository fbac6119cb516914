package admin

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

//go:embed web
var webFS embed.FS

// pages are the dashboard's parsed templates, one set per page so each can
// define its own "content".
type pages struct {
	byName map[string]*template.Template
}

var funcs = template.FuncMap{
	"ago":     ago,
	"when":    func(t time.Time) string { return t.Local().Format(time.DateTime) },
	"join":    strings.Join,
	"classes": func() []outcome.Outcome { return outcome.Failures },
	"str":     func(v any) string { return fmt.Sprint(v) },
}

func parsePages() (*pages, error) {
	p := &pages{byName: map[string]*template.Template{}}
	names, err := fs.Glob(webFS, "web/*.html")
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if name == "web/layout.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", name)
		if err != nil {
			return nil, fmt.Errorf("admin: template %s: %w", name, err)
		}
		p.byName[strings.TrimSuffix(strings.TrimPrefix(name, "web/"), ".html")] = t
	}
	return p, nil
}

// view is what every page's template gets.
type view struct {
	Title   string
	Nav     string
	CSRF    string
	Refresh int // seconds; 0: no auto-refresh
	// RefreshPaused: the page would refresh itself, but the reader paused
	// it (?refresh=off). PauseURL and ResumeURL are this page with and
	// without that; render sets them.
	RefreshPaused       bool
	PauseURL, ResumeURL string
	Now                 time.Time
	Error               string
	Notice              string // what the last action did
	Data                any
}

func (s *Server) routeDashboard(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.overview)
	mux.HandleFunc("GET /runs", s.runs)
	mux.HandleFunc("GET /runs/{id}", s.run)
	mux.HandleFunc("POST /runs/{id}/retry", s.retryRun)
	mux.HandleFunc("GET /dead-letters", s.deadLetters)
	mux.HandleFunc("POST /dead-letters/retry", s.retryDeadLetters)
	mux.HandleFunc("POST /dead-letters/purge", s.purgeDeadLetters)
	mux.HandleFunc("GET /replays", s.replays)
	mux.HandleFunc("GET /style.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		http.ServeFileFS(w, r, webFS, "web/style.css")
	})
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("POST /login", s.login)
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	t := s.pages.byName[page]
	v.CSRF = s.csrfToken(w, r)
	v.Now = time.Now()
	if v.Refresh > 0 {
		q := r.URL.Query()
		paused := q.Get("refresh") == "off"
		q.Del("refresh")
		resume := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
		q.Set("refresh", "off")
		pause := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
		v.PauseURL, v.ResumeURL = pause.String(), resume.String()
		if paused {
			v.Refresh, v.RefreshPaused = 0, true
		}
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		s.log.Error().Err(err).Str("page", page).Msg("page not rendered")
		http.Error(w, "admin: cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, title string, err error) {
	s.render(w, r, status, "error", view{Title: title, Error: err.Error()})
}

// workflowRow is a workflow on the overview.
type workflowRow struct {
	replica.WorkflowStatus
	Runs, Created, Updated, Failed int // over Window, from the run log
	Window                         string
	PerMinute                      float64
	Backlog                        uint64
	DeadLetterTotal                int
}

// processStart is when this process started: the overview's counts cover
// the last hour, or less for a younger process, and say which.
var processStart = time.Now()

// recentWindow is how far back the overview counts: an hour, or since the
// process started when that is less, with its label ("last hour", "last 40s").
func recentWindow(now time.Time) (time.Duration, string) {
	up := now.Sub(processStart)
	if up >= time.Hour {
		return time.Hour, "Last hour"
	}
	up = max(up, time.Second)
	return up, "Last " + up.Round(time.Second).String() + " (since start)"
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rep, err := leads.CollectStatus(ctx, s.cfg.JetStream, s.cfg.Status)
	if err != nil {
		s.render(w, r, http.StatusServiceUnavailable, "overview", view{Title: "Overview", Nav: "overview", Refresh: 5, Error: err.Error()})
		return
	}
	hour := map[string]*workflowRow{}
	rows := make([]*workflowRow, 0, len(rep.Workflows))
	for _, ws := range rep.Workflows {
		row := &workflowRow{WorkflowStatus: ws, Backlog: ws.Pending + uint64(ws.AckPending)}
		for _, n := range ws.DeadLetters {
			row.DeadLetterTotal += n
		}
		hour[ws.Workflow] = row
		rows = append(rows, row)
	}
	var note string
	window, label := recentWindow(time.Now())
	for _, row := range rows {
		row.Window = label
	}
	if runs, err := s.recentRuns(ctx, window); err != nil {
		note = err.Error()
	} else {
		for _, run := range runs {
			row := hour[run.Workflow]
			if row == nil {
				continue
			}
			row.Runs++
			created, updated, failed := itemCounts(run)
			row.Created += created
			row.Updated += updated
			row.Failed += failed
		}
		for _, row := range rows {
			row.PerMinute = float64(row.Runs) / window.Minutes()
		}
	}
	var rate float64
	for _, rs := range rep.Replicas {
		rate += rs.RatePerMinute
	}
	why := s.notReady(ctx)
	var ready []string
	for _, n := range why {
		if n.credentials == "" {
			ready = append(ready, n.text)
		}
	}
	data := struct {
		Status      replica.Status
		Rows        []*workflowRow
		Rate        float64
		NotReady    bool
		Ready       []string
		Credentials []credentialsAlert
		RunLogErr   string
	}{rep, rows, rate, len(why) > 0, ready, credentialsAlerts(rows, why), note}
	s.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Refresh: 5, Data: data})
}

// credentialsAlert is Kustomer rejecting the credentials, with the
// workflows it pauses: the overview shows each reason once, not on every
// workflow's card and again in this replica's readiness.
type credentialsAlert struct {
	Reason    string
	Workflows []string
}

// credentialsAlerts groups the workflows paused by rejected credentials,
// across the replicas (rows) and in this one (why), by reason.
func credentialsAlerts(rows []*workflowRow, why []notReason) []credentialsAlert {
	var alerts []credentialsAlert
	add := func(reason, workflow string) {
		i := slices.IndexFunc(alerts, func(a credentialsAlert) bool { return a.Reason == reason })
		if i < 0 {
			alerts, i = append(alerts, credentialsAlert{Reason: reason}), len(alerts)
		}
		if !slices.Contains(alerts[i].Workflows, workflow) {
			alerts[i].Workflows = append(alerts[i].Workflows, workflow)
			slices.Sort(alerts[i].Workflows)
		}
	}
	for _, row := range rows {
		if row.CredentialsRejected && row.Reason != "" {
			add(row.Reason, row.Workflow)
		}
	}
	for _, n := range why {
		if n.credentials != "" {
			add(n.credentials, n.workflow)
		}
	}
	return alerts
}

// recentRuns lists the runs of the last d; an empty log is no error.
func (s *Server) recentRuns(ctx context.Context, d time.Duration) ([]runlog.Record, error) {
	l, err := s.stores.runLog(ctx)
	if err != nil {
		return nil, err
	}
	return l.List(ctx, runlog.Filter{Since: time.Now().Add(-d)})
}

// itemCounts counts a run's customers created and updated and its items
// failed; an event dead-lettered whole counts as one failure.
func itemCounts(r runlog.Record) (created, updated, failed int) {
	for _, it := range r.Items {
		switch {
		case it.Outcome == outcome.Created:
			created++
		case it.Outcome == outcome.Updated:
			updated++
		case it.Outcome.Failed():
			failed++
		}
	}
	if len(r.Items) == 0 && r.Status == runlog.DeadLettered {
		failed++
	}
	return created, updated, failed
}

// sinceChoices are the time filters of the runs page.
var sinceChoices = []struct {
	Value string
	Label string
	D     time.Duration
}{
	{"15m", "last 15 minutes", 15 * time.Minute},
	{"1h", "last hour", time.Hour},
	{"24h", "last 24 hours", 24 * time.Hour},
	{"168h", "last 7 days", 7 * 24 * time.Hour},
	{"", "any time", 0},
}

// runsLimit bounds the runs one page lists.
const runsLimit = 200

type runsFilter struct {
	Workflow, Status, Since, Q string
}

func (s *Server) runs(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	f := runsFilter{Workflow: q.Get("workflow"), Status: q.Get("status"), Since: q.Get("since"), Q: strings.TrimSpace(q.Get("q"))}
	rf := runlog.Filter{Workflow: f.Workflow, Status: runlog.Status(f.Status)}
	for _, c := range sinceChoices {
		if c.Value == f.Since && c.D > 0 {
			rf.Since = time.Now().Add(-c.D)
		}
	}
	if f.Q == "" {
		rf.Limit = runsLimit
	}
	data := struct {
		Filter    runsFilter
		Runs      []runlog.Record
		More      bool
		Workflows []string
		Statuses  []runlog.Status
		Since     any
	}{Filter: f, Workflows: s.workflowNames(ctx), Statuses: runlog.Statuses, Since: sinceChoices}
	v := view{Title: "Runs", Nav: "runs", Data: &data}
	l, err := s.stores.runLog(ctx)
	if err == nil {
		data.Runs, err = l.List(ctx, rf)
	}
	if err != nil {
		v.Error = err.Error()
		s.render(w, r, http.StatusOK, "runs", v)
		return
	}
	if f.Q != "" {
		data.Runs = s.search(ctx, data.Runs, f.Q)
	}
	if len(data.Runs) > runsLimit {
		data.Runs, data.More = data.Runs[:runsLimit], true
	}
	s.render(w, r, http.StatusOK, "runs", v)
}

// search keeps the runs whose run id, event id or customer ids contain q,
// or, for q with an "@" (an email), whose event (read back from the leads
// stream while it keeps it) contains it; case-insensitive. It reads at most
// searchEvents events.
func (s *Server) search(ctx context.Context, runs []runlog.Record, q string) []runlog.Record {
	lq := strings.ToLower(q)
	has := func(v string) bool { return strings.Contains(strings.ToLower(v), lq) }
	var events func(seq uint64) []byte
	if strings.Contains(q, "@") {
		stream, err := s.cfg.JetStream.Stream(ctx, cmp.Or(s.cfg.Status.Stream, leads.StreamDefault))
		read := 0
		events = func(seq uint64) []byte {
			if err != nil || read >= searchEvents {
				return nil
			}
			read++
			m, gerr := stream.GetMsg(ctx, seq)
			if gerr != nil {
				return nil
			}
			return m.Data
		}
	}
	return slices.DeleteFunc(runs, func(run runlog.Record) bool {
		if has(run.ID) || has(run.EventID) {
			return false
		}
		for _, it := range run.Items {
			if it.CustomerID != "" && has(it.CustomerID) {
				return false
			}
		}
		if events != nil && run.StreamSeq > 0 {
			return !bytes.Contains(bytes.ToLower(events(run.StreamSeq)), []byte(lq))
		}
		return true
	})
}

// searchEvents bounds the events one search by email reads.
const searchEvents = 2000

func (s *Server) workflowNames(ctx context.Context) []string {
	var names []string
	for _, f := range s.cfg.Workflows.Workflows() {
		names = append(names, f.Workflow)
	}
	if rep, err := leads.CollectStatus(ctx, s.cfg.JetStream, s.cfg.Status); err == nil {
		for _, ws := range rep.Workflows {
			names = append(names, ws.Workflow)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// itemRow is one item on a run's page.
type itemRow struct {
	runlog.Item
	CustomerURL string
}

func (s *Server) run(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	l, err := s.stores.runLog(ctx)
	var run runlog.Record
	if err == nil {
		run, err = l.Get(ctx, r.PathValue("id"))
	}
	if errors.Is(err, runlog.ErrNotFound) {
		s.fail(w, r, http.StatusNotFound, "Run not found", err)
		return
	}
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "Run", err)
		return
	}
	items := make([]itemRow, len(run.Items))
	for i, it := range run.Items {
		items[i] = itemRow{Item: it}
		if it.CustomerID != "" && s.cfg.CustomerURL != nil {
			items[i].CustomerURL = s.cfg.CustomerURL(it.CustomerID)
		}
	}
	entries, _ := s.entriesOfRun(ctx, run)
	bulk := slices.ContainsFunc(run.Items, func(it runlog.Item) bool { return it.BulkJob != "" })
	traceURL := ""
	if run.TraceID != "" && s.cfg.TraceURL != nil {
		traceURL = s.cfg.TraceURL(run.TraceID)
	}
	data := struct {
		Run         runlog.Record
		Items       []itemRow
		DeadLetters []dlq.Record
		Bulk        bool // some item went in a bulk job: the page shows the column
		TraceURL    string
	}{run, items, entries, bulk, traceURL}
	s.render(w, r, http.StatusOK, "run", view{Title: "Run " + run.ID, Nav: "runs", Data: data})
}

// entriesOfRun returns the dead letters run wrote that are still there.
func (s *Server) entriesOfRun(ctx context.Context, run runlog.Record) ([]dlq.Record, error) {
	if run.Status == runlog.Succeeded || run.Status == runlog.Paused {
		return nil, nil
	}
	st, err := s.stores.deadLetters(ctx)
	if err != nil {
		return nil, err
	}
	all, err := st.List(ctx, dlq.Filter{Workflow: run.Workflow})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(e dlq.Record) bool { return e.Run != run.ID }), nil
}

// ago says how long ago t was, roughly: "3m ago".
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}
