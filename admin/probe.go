package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/kustomer-sync/kustomer-sync/leads"
)

// NotReady lists why the process is not ready, none when it is: NATS not
// connected, workflows not started (start-up or a reload in progress), a
// workflow's consumer missing, Kustomer rejecting the credentials, or a
// workflow paused because its outcomes cannot be stored (a full dead-letter
// stream, say).
func (s *Server) NotReady(ctx context.Context) []string {
	var why []string
	for _, n := range s.notReady(ctx) {
		why = append(why, n.text)
	}
	return why
}

// notReason is one reason [Server.NotReady] gives.
type notReason struct {
	text string
	// workflow and credentials are set when Kustomer rejects the
	// credentials: the workflow paused, and why (the overview shows that
	// once for all the workflows it pauses).
	workflow, credentials string
}

func (s *Server) notReady(ctx context.Context) []notReason {
	var why []notReason
	if !s.cfg.Conn.IsConnected() {
		return append(why, notReason{text: "NATS is not connected"})
	}
	flows := s.cfg.Workflows.Workflows()
	if flows == nil {
		return append(why, notReason{text: "the workflows have not started"})
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
	defer cancel()
	stream := cmp.Or(s.cfg.Status.Stream, leads.StreamDefault)
	for _, f := range flows {
		if f.StoreFailed {
			why = append(why, notReason{text: fmt.Sprintf("workflow %s is paused: %s", f.Workflow, f.Reason)})
		}
		if f.CredentialsRejected {
			why = append(why, notReason{text: fmt.Sprintf("workflow %s is paused: Kustomer rejects the credentials: %s", f.Workflow, f.Reason),
				workflow: f.Workflow, credentials: f.Reason})
		}
		if _, err := s.cfg.JetStream.Consumer(ctx, stream, f.Consumer); err != nil {
			why = append(why, notReason{text: fmt.Sprintf("workflow %s: consumer %s of stream %s: %v", f.Workflow, f.Consumer, stream, err)})
		}
	}
	return why
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if why := s.NotReady(r.Context()); len(why) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready:\n%s\n", strings.Join(why, "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// statusJSON serves what `kustomer-sync status --json` prints.
func (s *Server) statusJSON(w http.ResponseWriter, r *http.Request) {
	rep, err := leads.CollectStatus(r.Context(), s.cfg.JetStream, s.cfg.Status)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}
