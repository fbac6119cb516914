package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// StreamDefault is the stream lead events are published to.
	StreamDefault = "LEADS"
	// SubjectsDefault are the stream's subjects.
	SubjectsDefault = "leads.>"
	// DedupWindowDefault is how long JetStream remembers a Nats-Msg-Id, so a
	// re-run publish within it does not duplicate events.
	DedupWindowDefault = 24 * time.Hour
	// ResultsStreamDefault keeps the results of created customers for
	// downstream consumers.
	ResultsStreamDefault = "KSYNC_RESULTS"
	// ResultsSubjectsDefault are the subjects the results stream captures.
	ResultsSubjectsDefault = "kustomer.customers.created.>"
	// ResultsMaxAgeDefault is how long results are kept.
	ResultsMaxAgeDefault = 7 * 24 * time.Hour

	// managedBy marks streams this program created, so it knows it may update them.
	managedByKey   = "managed-by"
	managedByValue = "kustomer-sync"
)

// StreamConfig describes the leads stream.
type StreamConfig struct {
	Name        string        // default StreamDefault
	Subjects    []string      // default [SubjectsDefault]
	Replicas    int           // default 1; 3 on a cluster
	DedupWindow time.Duration // default DedupWindowDefault
}

func (c *StreamConfig) setDefaults() {
	c.Name = cmp.Or(c.Name, StreamDefault)
	if len(c.Subjects) == 0 {
		c.Subjects = []string{SubjectsDefault}
	}
	c.Replicas = max(c.Replicas, 1)
	if c.DedupWindow == 0 {
		c.DedupWindow = DedupWindowDefault
	}
}

// ensureStream creates the stream, updates it when this program created it,
// or, when an operator created it, uses it as it is if it covers every
// filter subject, and says which subject it lacks if not.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, filters []string) (jetstream.Stream, error) {
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[managedByKey] = managedByValue
	st, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		st, err = js.CreateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("worker: create stream %s: %w", cfg.Name, err)
		}
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("worker: stream %s: %w", cfg.Name, err)
	}
	info := st.CachedInfo()
	if info.Config.Metadata[managedByKey] == managedByValue {
		st, err = js.UpdateStream(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("worker: update stream %s: %w", cfg.Name, err)
		}
		return st, nil
	}
	for _, f := range filters {
		if !subjectsCover(info.Config.Subjects, f) {
			return nil, fmt.Errorf("worker: stream %s exists (not created by kustomer-sync) with subjects %v, which do not cover %q: add the subject to the stream or change the workflow's subject",
				cfg.Name, info.Config.Subjects, f)
		}
	}
	return st, nil
}

// withUncovered returns subjects plus those of extra that they do not cover,
// so a stream captures every subject a workflow publishes to.
func withUncovered(subjects, extra []string) []string {
	out := slices.Clone(subjects)
	for _, e := range extra {
		if e != "" && !subjectsCover(out, e) {
			out = append(out, e)
		}
	}
	return out
}

// subjectsCover reports whether every message on filter would be stored by a
// stream with the given subjects.
func subjectsCover(subjects []string, filter string) bool {
	for _, s := range subjects {
		if subjectCovers(s, filter) {
			return true
		}
	}
	return false
}

func subjectCovers(pattern, filter string) bool {
	p := strings.Split(pattern, ".")
	f := strings.Split(filter, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(f) > i
		}
		if i >= len(f) {
			return false
		}
		switch {
		case tok == "*":
			if f[i] == ">" {
				return false
			}
		case tok != f[i]:
			return false
		}
	}
	return len(p) == len(f)
}
