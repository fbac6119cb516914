package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// snapshot is what [Sandbox.Save] writes: every customer, in creation order,
// as the API answers it.
type snapshot struct {
	Customers []snapshotCustomer `json:"customers"`
}

type snapshotCustomer struct {
	ID        string          `json:"id"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"` // {"type","id","attributes","links"}
}

// Save writes the sandbox's customers as JSON, for [Sandbox.Load] in a later
// process: a sandbox beside a worker whose ledger outlives it (run --sandbox
// with its store in a data dir) must keep the customers the ledger points at.
func (s *Sandbox) Save(w io.Writer) error {
	s.mu.Lock()
	s.settle(s.now())
	snap := snapshot{Customers: make([]snapshotCustomer, len(s.customers))}
	for i, r := range s.customers {
		snap.Customers[i] = snapshotCustomer{ID: r.id, CreatedAt: r.createdAt, Data: r.data}
	}
	s.mu.Unlock()
	if err := json.NewEncoder(w).Encode(snap); err != nil {
		return fmt.Errorf("sandbox: save: %w", err)
	}
	return nil
}

// Load adds the customers a [Sandbox.Save] wrote, with their ids, to a
// sandbox that has none yet, and returns how many.
func (s *Sandbox) Load(r io.Reader) (int, error) {
	var snap snapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return 0, fmt.Errorf("sandbox: load: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.customers) > 0 {
		return 0, errors.New("sandbox: load: the sandbox has customers already")
	}
	for _, c := range snap.Customers {
		var d struct {
			Attributes map[string]any `json:"attributes"`
		}
		if err := json.Unmarshal(c.Data, &d); err != nil || c.ID == "" {
			return 0, fmt.Errorf("sandbox: load: customer %q: not a customer as Save writes it", c.ID)
		}
		if _, dup := s.byID[c.ID]; dup {
			return 0, fmt.Errorf("sandbox: load: customer %q twice", c.ID)
		}
		i := len(s.customers)
		s.customers = append(s.customers, record{id: c.ID, createdAt: c.CreatedAt, data: c.Data})
		s.byID[c.ID] = i
		s.index(i, d.Attributes, true)
	}
	// New ids must not repeat loaded ones: they start past as many as
	// there were ids (customers and their emails) before.
	s.idSeq += uint64(len(snap.Customers)) * 16
	return len(snap.Customers), nil
}

// SaveFile writes [Sandbox.Save] to path, whole or not at all (a temporary
// file renamed over it), creating its directory.
func (s *Sandbox) SaveFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("sandbox: save: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".customers-*.json")
	if err != nil {
		return fmt.Errorf("sandbox: save: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	if err := s.Save(tmp); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("sandbox: save: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("sandbox: save: %w", err)
	}
	return nil
}

// LoadFile is [Sandbox.Load] from path; a file that does not exist yet is no
// customer and no error.
func (s *Sandbox) LoadFile(path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sandbox: load: %w", err)
	}
	defer f.Close()
	n, err := s.Load(f)
	if err != nil {
		return 0, fmt.Errorf("%w (file %s)", err, path)
	}
	return n, nil
}

// Version changes whenever a customer is created or updated: a caller that
// saves the sandbox now and then saves only when it moved.
func (s *Sandbox) Version() int {
	s.mu.Lock()
	s.settle(s.now())
	defer s.mu.Unlock()
	return s.stats.Creates + s.stats.Updates
}
