package admin

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

// stores opens the run log and the dead-letter store on first use: the
// worker creates their streams as it starts, after the server may be up.
type stores struct {
	js     jetstream.JetStream
	status leads.StatusConfig

	mu   sync.Mutex
	runs RunLog
	dead DeadLetters
}

func (s *stores) runLog(ctx context.Context) (RunLog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs == nil {
		l, err := runlog.Open(ctx, s.js, runlog.Config{})
		if err != nil {
			return nil, err
		}
		s.runs = l
	}
	return s.runs, nil
}

func (s *stores) deadLetters(ctx context.Context) (DeadLetters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead == nil {
		st, err := dlq.OpenStore(ctx, s.js, s.status.DeadLetterStream)
		if err != nil {
			return nil, err
		}
		s.dead = st
	}
	return s.dead, nil
}
