package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

type deadFilter struct {
	Workflow, Class, Q, Run string
}

func (f deadFilter) filter() (dlq.Filter, error) {
	c, err := outcome.ParseFailure(f.Class)
	if f.Class != "" && err != nil {
		return dlq.Filter{}, fmt.Errorf("admin: class %q: %w", f.Class, err)
	}
	return dlq.Filter{Workflow: f.Workflow, Class: c, Grep: f.Q, Run: f.Run}, nil
}

func (f deadFilter) Query() string {
	v := url.Values{}
	for k, s := range map[string]string{"workflow": f.Workflow, "class": f.Class, "q": f.Q, "run": f.Run} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v.Encode()
}

func (f deadFilter) Empty() bool { return f == deadFilter{} }

// entryRow is a dead letter on its page.
type entryRow struct {
	dlq.Record
	Payload string // indented when it is JSON
}

func readablePayload(p []byte) string {
	var buf bytes.Buffer
	if json.Valid(p) && json.Indent(&buf, p, "", "  ") == nil {
		return buf.String()
	}
	return strings.ToValidUTF8(string(p), "\uFFFD")
}

func deadFilterOf(get func(string) string) deadFilter {
	return deadFilter{Workflow: get("workflow"), Class: get("class"), Q: strings.TrimSpace(get("q")), Run: strings.TrimSpace(get("run"))}
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f := deadFilterOf(r.URL.Query().Get)
	data := struct {
		Filter    deadFilter
		Entries   []entryRow
		Workflows []string
	}{Filter: f, Workflows: s.workflowNames(ctx)}
	v := view{Title: "Dead letters", Nav: "dead", Data: &data}
	if n, err := strconv.Atoi(r.URL.Query().Get("purged")); err == nil {
		v.Notice = fmt.Sprintf("Purged %d dead letter%s.", n, map[bool]string{true: "", false: "s"}[n == 1])
	}
	filter, err := f.filter()
	var recs []dlq.Record
	if err == nil {
		var st DeadLetters
		if st, err = s.stores.deadLetters(ctx); err == nil {
			recs, err = st.List(ctx, filter)
		}
	}
	if err != nil {
		v.Error = err.Error()
	}
	slices.Reverse(recs) // newest first
	for _, rec := range recs {
		data.Entries = append(data.Entries, entryRow{Record: rec, Payload: readablePayload(rec.Payload)})
	}
	s.render(w, r, http.StatusOK, "deadletters", v)
}

// parseIDs reads the form's ids (repeated or comma-separated).
func parseIDs(vals []string) ([]uint64, error) {
	var ids []uint64
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			id, err := strconv.ParseUint(part, 10, 64)
			if err != nil || id == 0 {
				return nil, fmt.Errorf("admin: dead letter id %q: want a positive number", part)
			}
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// confirmView asks before a write that touches many entries. Its form
// names the entries it lists, and only those: confirming acts on what the
// operator saw, never on entries that matched the filter since.
type confirmView struct {
	Action   string // "retry" or "purge"
	Count    int
	Filter   deadFilter
	Matching bool   // the entries were chosen by Filter (all=1)
	IDs      string // of Entries, comma-separated
	Entries  []dlq.Record
}

// selection checks a write form's CSRF token and reads which entries it
// names: ids, or the filter with all=1 (then ids is empty: the caller must
// ask first, listing what matches now). It answers the request and returns
// ok=false when it cannot.
func (s *Server) selection(w http.ResponseWriter, r *http.Request) (f dlq.Filter, df deadFilter, ids []uint64, ok bool) {
	if !s.checkCSRF(w, r) {
		return f, df, nil, false
	}
	ids, err := parseIDs(r.PostForm["ids"])
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Dead letters", err)
		return f, df, nil, false
	}
	df = deadFilterOf(r.PostFormValue)
	switch {
	case len(ids) > 0:
		return dlq.Filter{IDs: ids}, df, ids, true
	case r.PostFormValue("all") == "1":
		if f, err = df.filter(); err != nil {
			s.fail(w, r, http.StatusBadRequest, "Dead letters", err)
			return f, df, nil, false
		}
		f.All = df.Empty()
		return f, df, nil, true
	}
	s.fail(w, r, http.StatusBadRequest, "Dead letters", errors.New("admin: no dead letter selected"))
	return f, df, nil, false
}

func (s *Server) retryDeadLetters(w http.ResponseWriter, r *http.Request) {
	f, df, ids, ok := s.selection(w, r)
	if !ok {
		return
	}
	// One entry is one click; more ask first, with the count. A filter
	// always asks: the confirmation names the entries it listed.
	if len(ids) == 0 || len(ids) > 1 && r.PostFormValue("confirm") != "1" {
		s.confirm(w, r, "retry", f, df)
		return
	}
	s.replay(w, r, f)
}

func (s *Server) confirm(w http.ResponseWriter, r *http.Request, action string, f dlq.Filter, df deadFilter) {
	st, err := s.stores.deadLetters(r.Context())
	var recs []dlq.Record
	if err == nil {
		recs, err = st.List(r.Context(), f)
	}
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "Dead letters", err)
		return
	}
	c := confirmView{Action: action, Count: len(recs), Filter: df, Matching: len(f.IDs) == 0, Entries: recs}
	parts := make([]string, len(recs))
	for i, rec := range recs {
		parts[i] = strconv.FormatUint(rec.ID, 10)
	}
	c.IDs = strings.Join(parts, ",")
	s.render(w, r, http.StatusOK, "confirm", view{Title: "Confirm", Nav: "dead", Data: c})
}

// replayView is what a retry did, then what became of it.
type replayView struct {
	Replayed, Skipped int
	Kept              []keptRow
	Gone              []uint64
	Outcomes          []replayOutcome
	Pending           bool
	Err               string
}

type keptRow struct {
	ID       uint64
	Workflow string
	Reason   string
}

// replayOutcome is the run of one replayed entry, once the worker ran it.
type replayOutcome struct {
	Entry       uint64
	Workflow    string
	Run         *runlog.Record
	DeadLetters []dlq.Record // what the new run dead-lettered, if it failed again
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request, f dlq.Filter) {
	ctx := r.Context()
	st, err := s.stores.deadLetters(ctx)
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "Retry", err)
		return
	}
	started := time.Now().Add(-time.Second)
	res, err := st.Replay(ctx, f, dlq.ReplayOptions{Check: s.cfg.ReplayCheck(s.cfg.JetStream)})
	v := replayView{Replayed: res.Replayed, Skipped: res.Skipped, Gone: res.Gone}
	if err != nil {
		v.Err = err.Error()
	}
	for _, k := range res.Kept {
		v.Kept = append(v.Kept, keptRow{ID: k.Record.ID, Workflow: k.Record.Workflow, Reason: k.Reason.Error()})
	}
	s.log.Info().Int("replayed", res.Replayed).Int("kept", len(res.Kept)).Msg("dead letters retried from the dashboard")
	if len(res.Entries) == 0 {
		s.render(w, r, http.StatusOK, "replay", view{Title: "Retry", Nav: "dead", Data: v})
		return
	}
	q := url.Values{"since": {started.UTC().Format(time.RFC3339)}}
	for _, e := range res.Entries {
		q.Add("id", strconv.FormatUint(e.ID, 10))
		q.Add("wf", e.Workflow)
	}
	if v.Err != "" || len(v.Kept) > 0 {
		v.Pending = true
		for _, e := range res.Entries {
			v.Outcomes = append(v.Outcomes, replayOutcome{Entry: e.ID, Workflow: e.Workflow})
		}
		s.render(w, r, http.StatusOK, "replay", view{Title: "Retry", Nav: "dead", Refresh: 0, Data: v})
		return
	}
	http.Redirect(w, r, "/replays?"+q.Encode(), http.StatusSeeOther)
}

// replays shows what became of replayed entries: the run each one started,
// and for a run that failed again, why; it refreshes until every run is in.
func (s *Server) replays(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	since, err := time.Parse(time.RFC3339, q.Get("since"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Retry", fmt.Errorf("admin: since %q: want an RFC 3339 time", q.Get("since")))
		return
	}
	ids, err := parseIDs(q["id"])
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "Retry", err)
		return
	}
	wfs := q["wf"]
	v := replayView{Replayed: len(ids)}
	l, err := s.stores.runLog(ctx)
	var runs []runlog.Record
	if err == nil {
		runs, err = l.List(ctx, runlog.Filter{Since: since})
	}
	if err != nil {
		v.Err = err.Error()
	}
	for i, id := range ids {
		o := replayOutcome{Entry: id}
		if i < len(wfs) {
			o.Workflow = wfs[i]
		}
		// Newest first: the latest run of the replay (a paused one comes back).
		for _, run := range runs {
			if run.ReplayOf != nil && run.ReplayOf.DeadLetter == id && (o.Workflow == "" || run.Workflow == o.Workflow) {
				o.Run = &run
				break
			}
		}
		if o.Run == nil || o.Run.Status == runlog.Paused {
			v.Pending = true
		} else {
			o.DeadLetters, _ = s.entriesOfRun(ctx, *o.Run)
		}
		v.Outcomes = append(v.Outcomes, o)
	}
	refresh := 0
	if v.Pending {
		refresh = 2
	}
	s.render(w, r, http.StatusOK, "replay", view{Title: "Retry", Nav: "dead", Refresh: refresh, Data: v})
}

func (s *Server) retryRun(w http.ResponseWriter, r *http.Request) {
	if !s.checkCSRF(w, r) {
		return
	}
	ctx := r.Context()
	l, err := s.stores.runLog(ctx)
	var run runlog.Record
	if err == nil {
		run, err = l.Get(ctx, r.PathValue("id"))
	}
	if err != nil {
		s.fail(w, r, http.StatusNotFound, "Retry", err)
		return
	}
	entries, err := s.entriesOfRun(ctx, run)
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "Retry", err)
		return
	}
	if len(entries) == 0 {
		s.fail(w, r, http.StatusConflict, "Retry", fmt.Errorf("admin: run %s has no dead letter left to retry (retried or purged already)", run.ID))
		return
	}
	ids := make([]uint64, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	s.replay(w, r, dlq.Filter{IDs: ids})
}

func (s *Server) purgeDeadLetters(w http.ResponseWriter, r *http.Request) {
	f, df, ids, ok := s.selection(w, r)
	if !ok {
		return
	}
	// A purge always asks first, and deletes only the entries the
	// confirmation names (those it listed), never what the filter matches
	// at the click: an entry dead-lettered since was not confirmed.
	if len(ids) == 0 || r.PostFormValue("confirm") != "1" {
		s.confirm(w, r, "purge", f, df)
		return
	}
	st, err := s.stores.deadLetters(r.Context())
	n := 0
	if err == nil {
		n, err = st.Purge(r.Context(), f)
	}
	if err != nil {
		s.fail(w, r, http.StatusServiceUnavailable, "Purge", err)
		return
	}
	s.log.Info().Int("purged", n).Msg("dead letters purged from the dashboard")
	http.Redirect(w, r, "/dead-letters?purged="+strconv.Itoa(n), http.StatusSeeOther)
}
