// Package replica is the deployment's view of itself, kept in NATS: the
// organisation's Kustomer rate budget shared between the live replicas
// ([Budget]), their heartbeats and the state of their workflows ([State],
// [Read]), and the status of the whole deployment ([CollectStatus]).
package replica

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/sourcegraph/conc"

	"github.com/kustomer-sync/kustomer-sync/loop"
)

// Defaults of [BudgetConfig].
const (
	BucketDefault       = "KSYNC_REPLICAS"
	TTLDefault          = 6 * time.Second
	PauseSubjectDefault = "ksync.ratelimit.pause"
)

// budgetMarkerTTLMin is the shortest delete-marker TTL the server accepts.
const budgetMarkerTTLMin = time.Second

// idPattern is a valid JetStream KV key: dot-separated tokens.
var idPattern = regexp.MustCompile(`^[-_=a-zA-Z0-9]+(\.[-_=a-zA-Z0-9]+)*$`)

// ValidID reports whether id can be a replica's key in the replicas bucket:
// letters, digits, '-', '_', '=' and inner dots.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// DefaultID names a replica by host and process, so replicas on one host
// differ and a restarted process is a new replica.
func DefaultID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", cmp.Or(host, "replica"), os.Getpid())
}

// BudgetConfig configures a [Budget]. Zero fields take their defaults.
type BudgetConfig struct {
	// PerMinute is the organisation's Kustomer budget per minute, for the
	// whole deployment (default loop.PerMinuteDefault).
	PerMinute int
	// Bucket is the JetStream KV bucket of live replicas (default
	// BucketDefault). It is created if missing, in memory.
	Bucket string
	// ReplicaID is this replica's key in the bucket: letters, digits, '-',
	// '_', '=' and inner dots, so a host name works (default random). Two
	// replicas with the same ID count as one.
	ReplicaID string
	// TTL is how long a replica that stopped heartbeating still counts
	// (default TTLDefault); it heartbeats every TTL/3.
	TTL time.Duration
	// PauseSubject carries 429 pauses between replicas (default
	// PauseSubjectDefault).
	PauseSubject string
	// Clock is the limiter's clock, used to turn pauses into durations on the
	// wire (default loop.SystemClock()); heartbeats use real time, as the
	// server's TTL does.
	Clock loop.Clock
	// Logger receives one event per change of the replica count; the zero
	// value logs nothing.
	Logger zerolog.Logger
}

func (c BudgetConfig) withDefaults() (BudgetConfig, error) {
	c.PerMinute = cmp.Or(c.PerMinute, loop.PerMinuteDefault)
	c.Bucket = cmp.Or(c.Bucket, BucketDefault)
	c.TTL = cmp.Or(c.TTL, TTLDefault)
	c.PauseSubject = cmp.Or(c.PauseSubject, PauseSubjectDefault)
	c.Clock = cmp.Or[loop.Clock](c.Clock, loop.SystemClock())
	if c.ReplicaID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		c.ReplicaID = hex.EncodeToString(b[:])
	}
	switch {
	case c.PerMinute < 0:
		return c, errors.New("replica: BudgetConfig.PerMinute must not be negative")
	case c.TTL < 0:
		return c, errors.New("replica: BudgetConfig.TTL must not be negative")
	case !ValidID(c.ReplicaID):
		return c, fmt.Errorf("replica: BudgetConfig.ReplicaID %q: only letters, digits, '-', '_', '=' and inner dots are allowed", c.ReplicaID)
	}
	return c, nil
}

// Budget shares the organisation's Kustomer rate budget between the
// replicas of a deployment, through NATS itself: each replica keeps a key
// alive in a JetStream KV bucket, watches the bucket, and sets its
// Limiter's share to PerMinute divided by the live replicas; a replica that
// stops deletes its key so the others grow their share at once, and one
// that dies ages out after TTL. It also carries 429 pauses: a pause the
// Limiter starts on a 429 is published, and pauses published by other
// replicas pause this Limiter.
//
// Create one per process with NewBudget, then Start and Stop it. A Budget is
// safe for concurrent use.
type Budget struct {
	cfg BudgetConfig
	js  jetstream.JetStream
	nc  *nats.Conn
	lim *loop.Limiter
	log zerolog.Logger

	running atomic.Bool // read by the OnPause hook without waiting for Start or Stop

	mu       sync.Mutex
	kv       jetstream.KeyValue
	sub      *nats.Subscription
	seen     map[string]time.Time // replica → when this process last saw its heartbeat
	replicas int
	cancel   context.CancelFunc
	wg       conc.WaitGroup

	workflows atomic.Pointer[func() []WorkflowState] // published with each heartbeat
	admin     atomic.Pointer[string]                 // the admin server's address, published with each heartbeat
	refresh   chan struct{}                          // asks beat for a heartbeat now
}

// budgetPause is a 429 pause on the wire. It carries a duration rather than
// an instant, so replicas' clocks need not agree.
type budgetPause struct {
	Replica string `json:"replica"`
	ForMS   int64  `json:"for_ms"`
}

// NewBudget returns a Budget for lim; nothing touches NATS until Start.
func NewBudget(js jetstream.JetStream, nc *nats.Conn, lim *loop.Limiter, cfg BudgetConfig) (*Budget, error) {
	switch {
	case js == nil || nc == nil:
		return nil, errors.New("replica: budget needs a NATS connection and JetStream")
	case lim == nil:
		return nil, errors.New("replica: budget needs a limiter")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Budget{cfg: cfg, js: js, nc: nc, lim: lim, seen: map[string]time.Time{}, replicas: 1, refresh: make(chan struct{}, 1)}
	b.log = cfg.Logger.With().Str("replica", cfg.ReplicaID).Logger()
	lim.OnPause(b.broadcast)
	return b, nil
}

// Start registers this replica, reads the replicas already live and sets the
// Limiter's share before it returns; then it heartbeats and follows the
// bucket until Stop is called or ctx ends.
func (b *Budget) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running.Load() {
		return errors.New("replica: budget already started")
	}
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         b.cfg.Bucket,
		Description:    "kustomer-sync replicas sharing the Kustomer rate budget",
		History:        1,
		TTL:            b.cfg.TTL,
		LimitMarkerTTL: max(b.cfg.TTL, budgetMarkerTTLMin),
		Storage:        jetstream.MemoryStorage,
	})
	if err != nil {
		return fmt.Errorf("replica: budget bucket %s: %w", b.cfg.Bucket, err)
	}
	sub, err := b.nc.Subscribe(b.cfg.PauseSubject, b.receivePause)
	if err != nil {
		return fmt.Errorf("replica: budget subscribe %s: %w", b.cfg.PauseSubject, err)
	}
	if err := b.heartbeat(ctx, kv); err != nil {
		_ = sub.Unsubscribe()
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	watcher, err := kv.WatchAll(runCtx)
	if err != nil {
		cancel()
		_ = sub.Unsubscribe()
		return fmt.Errorf("replica: budget watch %s: %w", b.cfg.Bucket, err)
	}
	// The watcher first replays every live key, then sends nil.
	for initial := true; initial; {
		select {
		case e := <-watcher.Updates():
			if e == nil {
				initial = false
				break
			}
			b.applyLocked(e)
		case <-ctx.Done():
			cancel()
			_ = watcher.Stop()
			_ = sub.Unsubscribe()
			return fmt.Errorf("replica: budget start: %w", ctx.Err())
		}
	}
	b.kv, b.sub, b.cancel = kv, sub, cancel
	b.running.Store(true)
	b.reshareLocked()
	b.wg.Go(func() { b.follow(runCtx, watcher) })
	b.wg.Go(func() { b.beat(runCtx, kv) })
	return nil
}

// Stop stops heartbeating and following, and deletes this replica's key so
// the other replicas take over its share at once. It returns an error if the
// key could not be deleted (it then ages out after TTL).
func (b *Budget) Stop(ctx context.Context) error {
	b.mu.Lock()
	if !b.running.Swap(false) {
		b.mu.Unlock()
		return nil
	}
	b.cancel()
	b.mu.Unlock()
	b.wg.Wait() // no heartbeat may resurrect the key after the purge below

	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.sub.Unsubscribe()
	if perr := b.kv.Purge(ctx, b.cfg.ReplicaID); perr != nil {
		err = errors.Join(err, perr)
	}
	if err != nil {
		return fmt.Errorf("replica: budget stop: %w", err)
	}
	return nil
}

// ID is this replica's key in the replicas bucket.
func (b *Budget) ID() string { return b.cfg.ReplicaID }

// Replicas returns the number of live replicas this one knows of, itself
// included.
func (b *Budget) Replicas() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.replicas
}

// SetWorkflows makes each heartbeat carry the states fn returns (usually a
// Worker's Workflows method), so other processes can read them with
// [Read]. Safe to call at any time.
func (b *Budget) SetWorkflows(fn func() []WorkflowState) { b.workflows.Store(&fn) }

// Beat writes this replica's heartbeat now and waits for it, so the
// workflows it just started are seen by the other processes (the leads
// stream's subjects, a replay's check) at once. It does nothing before
// Start.
func (b *Budget) Beat(ctx context.Context) error {
	b.mu.Lock()
	kv := b.kv
	b.mu.Unlock()
	if kv == nil || !b.running.Load() {
		return nil
	}
	return b.heartbeat(ctx, kv)
}

// SetAdmin makes each heartbeat carry the replica's admin server address
// (empty: none) and asks for a heartbeat now. Safe to call at any time.
func (b *Budget) SetAdmin(addr string) {
	b.admin.Store(&addr)
	b.Refresh()
}

// Refresh asks for a heartbeat now rather than at the next tick, e.g. when a
// workflow paused. It never blocks; it does nothing before Start.
func (b *Budget) Refresh() { signal(b.refresh) }

// follow applies the bucket's changes until ctx ends.
func (b *Budget) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			b.mu.Lock()
			b.applyLocked(e)
			b.reshareLocked()
			b.mu.Unlock()
		}
	}
}

// beat refreshes this replica's key every TTL/3 and forgets replicas whose
// heartbeats stopped, in case their expiry marker was missed.
func (b *Budget) beat(ctx context.Context, kv jetstream.KeyValue) {
	t := time.NewTicker(b.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.refresh:
		}
		if err := b.heartbeat(ctx, kv); err != nil && ctx.Err() == nil {
			b.log.Warn().Err(err).Msg("budget heartbeat failed")
		}
		b.mu.Lock()
		now := time.Now()
		for id, at := range b.seen {
			if id != b.cfg.ReplicaID && now.Sub(at) > b.cfg.TTL {
				delete(b.seen, id)
			}
		}
		b.reshareLocked()
		b.mu.Unlock()
	}
}

func (b *Budget) heartbeat(ctx context.Context, kv jetstream.KeyValue) error {
	hb := State{Replica: b.cfg.ReplicaID, PerMinute: b.cfg.PerMinute, RatePerMinute: b.lim.PerMinute(), At: time.Now().UTC()}
	if fn := b.workflows.Load(); fn != nil {
		hb.Workflows = (*fn)()
	}
	if a := b.admin.Load(); a != nil {
		hb.Admin = *a
	}
	v, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("replica: budget heartbeat: %w", err)
	}
	if _, err := kv.Put(ctx, b.cfg.ReplicaID, v); err != nil {
		return fmt.Errorf("replica: budget heartbeat: %w", err)
	}
	return nil
}

func (b *Budget) applyLocked(e jetstream.KeyValueEntry) {
	if e.Operation() == jetstream.KeyValuePut {
		b.seen[e.Key()] = time.Now()
	} else {
		delete(b.seen, e.Key())
	}
}

// reshareLocked sets the limiter's share from the live replicas, itself
// always included.
func (b *Budget) reshareLocked() {
	n := len(b.seen)
	if _, ok := b.seen[b.cfg.ReplicaID]; !ok {
		n++
	}
	share := float64(b.cfg.PerMinute) / float64(n)
	b.lim.SetShare(share)
	if n != b.replicas {
		b.log.Info().Int("replicas", n).Float64("per_minute", share).Msg("budget replicas changed")
		b.replicas = n
		signal(b.refresh) // publish the new rate in force now
	}
}

// broadcast publishes a pause this replica's limiter started on a 429.
func (b *Budget) broadcast(until time.Time) {
	d := until.Sub(b.cfg.Clock.Now())
	if !b.running.Load() || d <= 0 {
		return
	}
	msg, err := json.Marshal(budgetPause{Replica: b.cfg.ReplicaID, ForMS: d.Milliseconds()})
	if err == nil {
		err = b.nc.Publish(b.cfg.PauseSubject, msg)
	}
	if err != nil {
		b.log.Warn().Err(err).Msg("budget pause broadcast failed")
		return
	}
	b.log.Info().Stringer("pause", d).Msg("budget pause broadcast")
}

// receivePause pauses the limiter for a pause another replica broadcast.
func (b *Budget) receivePause(m *nats.Msg) {
	var p budgetPause
	if err := json.Unmarshal(m.Data, &p); err != nil || p.ForMS <= 0 {
		b.log.Warn().Str("subject", m.Subject).Msg("budget ignored a malformed pause")
		return
	}
	if p.Replica == b.cfg.ReplicaID {
		return
	}
	b.lim.PauseUntil(b.cfg.Clock.Now().Add(time.Duration(p.ForMS) * time.Millisecond))
}

// signal wakes c's reader without blocking when it is already awake.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
