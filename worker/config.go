package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/dlq"
	"github.com/kustomer-sync/kustomer-sync/kustomer"
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/ledger"
	"github.com/kustomer-sync/kustomer-sync/loop"
	"github.com/kustomer-sync/kustomer-sync/mapping"
	"github.com/kustomer-sync/kustomer-sync/replica"
	"github.com/kustomer-sync/kustomer-sync/result"
	"github.com/kustomer-sync/kustomer-sync/runlog"
)

const (
	// AckWaitDefault is how long JetStream waits for an ack before
	// redelivering. The worker sends InProgress well within it while an
	// event's items are still running, so a slow Loop is never redelivered.
	AckWaitDefault = 30 * time.Second
	// MaxDeliverDefault bounds redeliveries of one event (crashes, pauses);
	// beyond it the event is dead-lettered with class max_deliveries.
	MaxDeliverDefault = 20
	// MaxEventBytesDefault is the largest event accepted; larger ones are
	// dead-lettered as invalid_event.
	MaxEventBytesDefault = 1 << 20
	// PauseNakDelayDefault is how long an event waits before redelivery when
	// its workflow paused.
	PauseNakDelayDefault = 5 * time.Second
	// fetchWait is how long one pull request waits for events.
	fetchWait = 2 * time.Second
)

// Kustomer is what the worker needs of a Kustomer client.
type Kustomer interface {
	CreateCustomer(ctx context.Context, body any) (*kustomer.Customer, error)
	CustomerByExternalID(ctx context.Context, externalID string) (*kustomer.Customer, error)
	// For workflows with match (look-ups) and on_match: update.
	CustomerByEmail(ctx context.Context, email string) (*kustomer.Customer, error)
	CustomerByPhone(ctx context.Context, phone string) (*kustomer.Customer, error)
	UpdateCustomer(ctx context.Context, id string, body any) (*kustomer.Customer, error)
}

// Config configures a [Worker]. Conn and Workflows are required; every other
// zero field takes its default (the XxxDefault constants of this package and
// of the packages named). [New] fills the defaults and checks every rule,
// including those between fields.
type Config struct {
	// Conn is the NATS connection the worker uses; required. The worker
	// neither drains nor closes it.
	Conn *nats.Conn
	// JetStream is Conn's JetStream context; default jetstream.New(Conn).
	// Set it for a JetStream domain or API prefix.
	JetStream jetstream.JetStream

	// Workflows are the workflows to run, each on its own durable consumer;
	// required, with distinct names. [Worker.Reload] replaces them.
	Workflows []*mapping.Workflow

	// Kustomer configures the Kustomer client the worker builds (base URL,
	// API key, Timeout: default kustomer.DefaultTimeout). The worker's
	// limiter sees every response's rate-limit headers and its metrics count
	// every request; Kustomer.OnResponse and OnRequest, when set, see them
	// first.
	Kustomer kustomer.Config
	// WrapKustomer, when set, wraps the client the worker built: whatever it
	// returns is what the worker calls (tests inject faults with it).
	WrapKustomer func(Kustomer) Kustomer

	// RatePerMinute is the organisation's Kustomer budget per minute, shared
	// by every replica of the deployment through replica.Budget; default
	// RatePerMinuteDefault.
	RatePerMinute int
	// RateBurst is how many requests may go at once after idle time; default
	// RatePerMinute/20 (a replica gets its share of it).
	RateBurst int
	// Budget says where the replicas meet to share RatePerMinute (bucket,
	// TTL, pause subject); its PerMinute, ReplicaID, Clock and Logger are
	// this Config's and must be left zero.
	Budget replica.BudgetConfig

	Stream     leads.StreamConfig
	DeadLetter dlq.StreamConfig
	RunLog     runlog.Config
	// Ledger.Lease (default ledger.LeaseDefault) must exceed Kustomer.Timeout: a
	// slow request's claim must outlive the request, or another replica
	// could claim the item and create it again.
	Ledger ledger.Config
	// ResultsStream captures the results subjects; default result.StreamDefault.
	ResultsStream string
	// KeyBucket keeps the replay key that replays are verified with; default
	// dlq.KeyBucketDefault. Created if missing.
	KeyBucket string

	AckWait        time.Duration // default AckWaitDefault
	MaxDeliver     int           // default MaxDeliverDefault
	MaxEventBytes  int           // default MaxEventBytesDefault
	PauseNakDelay  time.Duration // default PauseNakDelayDefault
	ConsumerPrefix string        // default leads.ConsumerPrefixDefault
	// BreakerThreshold is how many consecutive transient failures across
	// items pause a workflow; 0 means loop's default.
	BreakerThreshold int
	// ReplicaID names this replica in the ledger, the budget and logs:
	// letters, digits, '-', '_', '=' and inner dots; default host-pid (see
	// [replica.DefaultID]). Replicas of a deployment need distinct IDs.
	ReplicaID string
	// StartupTimeout bounds how long Start retries joining the budget and
	// creating the streams, buckets and consumers while NATS is unreachable
	// or JetStream has no leader yet (a cluster still forming); default
	// StartupTimeoutDefault. Reload retries as long.
	StartupTimeout time.Duration
	// DrainTimeout bounds the drain of [Worker.Reload]; default
	// DrainTimeoutDefault. [Worker.Stop] drains until its ctx ends instead.
	DrainTimeout time.Duration

	// Logger receives one event per decision; the zero value logs nothing.
	Logger zerolog.Logger
	// Clock drives the limiter, breakers, claims and retries; default
	// loop.SystemClock().
	Clock loop.Clock
	// Registerer takes the worker's metrics; default
	// prometheus.DefaultRegisterer. Workers of one process that share a
	// Registerer share their counters.
	Registerer prometheus.Registerer
	// TracerProvider, when set, traces each event (see worker/tracing.go);
	// nil makes no spans.
	TracerProvider trace.TracerProvider
}

// Defaults of [Config] besides those of the packages it names.
const (
	// RatePerMinuteDefault is Kustomer's Enterprise plan limit per organisation.
	RatePerMinuteDefault = loop.PerMinuteDefault
	// DrainTimeoutDefault bounds how long a reload waits for events in flight.
	DrainTimeoutDefault = 30 * time.Second
)

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("worker: config: Conn (a NATS connection) is required")
	}
	if err := checkWorkflows(c.Workflows); err != nil {
		return err
	}
	if c.Budget.PerMinute != 0 || c.Budget.ReplicaID != "" || c.Budget.Clock != nil {
		return errors.New("worker: config: Budget.PerMinute, Budget.ReplicaID and Budget.Clock come from RatePerMinute, ReplicaID and Clock: leave them zero")
	}
	c.Stream.SetDefaults()
	c.ResultsStream = cmp.Or(c.ResultsStream, result.StreamDefault)
	c.AckWait = cmp.Or(c.AckWait, AckWaitDefault)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, MaxDeliverDefault)
	c.MaxEventBytes = cmp.Or(c.MaxEventBytes, MaxEventBytesDefault)
	c.PauseNakDelay = cmp.Or(c.PauseNakDelay, PauseNakDelayDefault)
	c.ConsumerPrefix = cmp.Or(c.ConsumerPrefix, leads.ConsumerPrefixDefault)
	c.ReplicaID = cmp.Or(c.ReplicaID, replica.DefaultID())
	c.RatePerMinute = cmp.Or(c.RatePerMinute, RatePerMinuteDefault)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DrainTimeoutDefault)
	c.StartupTimeout = cmp.Or(c.StartupTimeout, StartupTimeoutDefault)
	c.Ledger.Lease = cmp.Or(c.Ledger.Lease, ledger.LeaseDefault)
	c.Kustomer.Timeout = cmp.Or(c.Kustomer.Timeout, kustomer.DefaultTimeout)
	c.Clock = cmp.Or[loop.Clock](c.Clock, loop.SystemClock())
	c.Registerer = cmp.Or[prometheus.Registerer](c.Registerer, prometheus.DefaultRegisterer)
	switch {
	case c.RatePerMinute < 1:
		return fmt.Errorf("worker: config: RatePerMinute %d: want 1 or more", c.RatePerMinute)
	case c.RateBurst < 0:
		return fmt.Errorf("worker: config: RateBurst %d: want 0 (RatePerMinute/20) or more", c.RateBurst)
	case c.AckWait < 0, c.PauseNakDelay < 0, c.DrainTimeout < 0, c.StartupTimeout < 0, c.Ledger.Lease < 0:
		return errors.New("worker: config: AckWait, PauseNakDelay, DrainTimeout, StartupTimeout and Ledger.Lease must not be negative")
	case c.MaxDeliver < 0, c.MaxEventBytes < 0:
		return errors.New("worker: config: MaxDeliver and MaxEventBytes must not be negative")
	case c.Ledger.Lease <= c.Kustomer.Timeout:
		return fmt.Errorf("worker: config: Ledger.Lease %s must exceed Kustomer.Timeout %s, or a slow request's item could be claimed and created by another replica", c.Ledger.Lease, c.Kustomer.Timeout)
	case !replica.ValidID(c.ReplicaID):
		return fmt.Errorf("worker: config: ReplicaID %q: only letters, digits, '-', '_', '=' and inner dots are allowed", c.ReplicaID)
	}
	return nil
}

// checkWorkflows wants at least one workflow, with distinct names.
func checkWorkflows(workflows []*mapping.Workflow) error {
	if len(workflows) == 0 {
		return errors.New("worker: no workflows")
	}
	seen := map[string]bool{}
	for _, wf := range workflows {
		if seen[wf.Name] {
			return fmt.Errorf("worker: workflow %q defined twice", wf.Name)
		}
		seen[wf.Name] = true
	}
	return nil
}
