package subject

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// errCodeSubjectOverlap is the server's "subjects overlap with an existing
// stream".
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// Need is a subject a stream must capture, and for whom (said in errors).
type Need struct {
	Subject string
	Who     string
}

// ExplainOverlap turns the server's "subjects overlap with an existing
// stream" into which stream, which subject and whose.
func ExplainOverlap(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, needs []Need, err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeSubjectOverlap {
		return err
	}
	if other, subj, theirs, found := OverlappingStream(ctx, js, cfg.Name, cfg.Subjects); found {
		return explained{OverlapError(cfg.Name, needs, other, subj, theirs), err}
	}
	return err
}

// explained is an error of the server's told in our words: it reads as
// the explanation alone (no "err_code=10065") and is still the server's
// error for errors.Is and errors.As.
type explained struct{ explanation, cause error }

func (e explained) Error() string   { return e.explanation.Error() }
func (e explained) Unwrap() []error { return []error{e.explanation, e.cause} }

// OverlappingStream finds a stream other than name that captures some
// subject of subjects. Streams it cannot list are not reported.
func OverlappingStream(ctx context.Context, js jetstream.JetStream, name string, subjects []string) (stream, ours, theirs string, found bool) {
	lister := js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.Name == name {
			continue
		}
		for _, t := range info.Config.Subjects {
			for _, s := range subjects {
				if Overlap(s, t) {
					found = true
					stream, ours, theirs = info.Config.Name, s, t
				}
			}
		}
		if found {
			break
		}
	}
	for range lister.Info() { // drain, so the lister's goroutine ends
	}
	return stream, ours, theirs, found
}

func OverlapError(stream string, needs []Need, other, ours, theirs string) error {
	whose := "its subject " + ours
	for _, n := range needs {
		if Overlap(n.Subject, theirs) {
			whose = fmt.Sprintf("subject %s of %s", n.Subject, n.Who)
			break
		}
	}
	return fmt.Errorf("subject: stream %s cannot capture %s: stream %s already captures %s, and NATS stores a subject in one stream only. Give the workflow a subject outside %s, or remove it from stream %s",
		stream, whose, other, theirs, theirs, other)
}
