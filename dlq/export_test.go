package dlq

import (
	"context"

	"github.com/nats-io/nats.go"
)

// ReplayMessage exposes the replay a Store would publish for r, so tests
// can play an earlier replay that died before deleting its entry.
func (s *Store) ReplayMessage(ctx context.Context, key *ReplayKey, r Record) (*nats.Msg, error) {
	m, _, err := s.replayMessage(ctx, key, r)
	return m, err
}
