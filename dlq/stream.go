package dlq

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/kustomer-sync/kustomer-sync/outcome"
	"github.com/kustomer-sync/kustomer-sync/overflow"
	"github.com/kustomer-sync/kustomer-sync/tracing"
)

const (
	// StreamDefault is the dead-letter stream's name.
	StreamDefault = "LEADS_DLQ"
	// SubjectsDefault is the subject filter the dead-letter stream captures:
	// one subject per workflow, dlq.<workflow>.
	SubjectsDefault = "dlq.>"
	// SubjectPrefixDefault is the prefix of a workflow's dead-letter subject.
	SubjectPrefixDefault = "dlq"
	// MaxAgeDefault keeps entries until they are replayed or purged: a dead
	// letter that expires is a failure nobody hears about.
	MaxAgeDefault time.Duration = 0
	// MaxBytesDefault bounds the stream at 1 GiB. A full stream refuses new
	// entries (discard new) rather than dropping old ones, so the worker
	// leaves the events unacknowledged and nothing is lost silently.
	MaxBytesDefault = overflow.MaxBytesDefault
	// ReplicasDefault is one replica; use 3 on a 3-node cluster.
	ReplicasDefault = overflow.ReplicasDefault
	// DuplicatesDefault is the window in which a repeated Nats-Msg-Id is
	// stored once (a worker crashing between the dead-letter publish and the
	// ack republishes within it).
	DuplicatesDefault = 2 * time.Minute
)

// Subject returns the default dead-letter subject of a workflow:
// dlq.<workflow>.
func Subject(workflow string) string { return SubjectPrefixDefault + "." + workflow }

// StreamConfig configures the dead-letter stream. The zero value is the
// default: name [StreamDefault], subjects [SubjectsDefault], no age limit,
// [MaxBytesDefault], [ReplicasDefault]. The stream uses file storage.
type StreamConfig struct {
	Name     string        // default StreamDefault
	Subjects []string      // default [SubjectsDefault]
	MaxAge   time.Duration // default MaxAgeDefault (no limit); negative is an error
	MaxBytes int64         // default MaxBytesDefault; negative is an error
	Replicas int           // default ReplicasDefault
}

func (c StreamConfig) withDefaults() StreamConfig {
	c.Name = cmp.Or(c.Name, StreamDefault)
	if len(c.Subjects) == 0 {
		c.Subjects = []string{SubjectsDefault}
	}
	c.MaxAge = cmp.Or(c.MaxAge, MaxAgeDefault)
	l := c.limits().WithDefaults()
	c.MaxBytes, c.Replicas = l.MaxBytes, l.Replicas
	return c
}

func (c StreamConfig) limits() overflow.Limits {
	return overflow.Limits{MaxAge: c.MaxAge, MaxBytes: c.MaxBytes, Replicas: c.Replicas}
}

func (c StreamConfig) validate() error {
	return c.limits().Validate("dlq: stream " + c.Name)
}

// EnsureStream creates the dead-letter stream, or updates it to cfg if it
// exists, and the [PayloadsBucket] object store beside it (same replicas and
// byte limit). It is safe to call from every replica at start.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "kustomer-sync dead letters: events that could not become customers, and why",
		Subjects:    cfg.Subjects,
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		Duplicates:  DuplicatesDefault,
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: ensure stream %s: %w", cfg.Name, err)
	}
	if err := ensurePayloads(ctx, js, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Publish writes r to subject (normally [Subject](r.Workflow)) and waits for
// JetStream's acknowledgement. Only when it returns nil is the failure
// durable; otherwise the caller must not acknowledge the original event.
//
// The Nats-Msg-Id is derived from the workflow, original stream sequence,
// class and items (see [MsgID]), so a worker that dead-letters the same
// failure twice within the stream's duplicate window stores it once. r.ID and
// r.Time are ignored.
//
// The entry always fits the server's max_payload, read from the connection:
// an item list too long for a header is summarised there
// ([HeaderItemsCount], [HeaderItemsSummary]), and it, the full error and,
// when the payload with the headers would not fit, the payload are stored
// first in an object of [PayloadsBucket] named by [HeaderObject]. Reading
// the entry through a [Store] gives the complete record back.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, r Record) error {
	if subject == "" {
		return errors.New("dlq: publish: empty subject")
	}
	if !r.Class.Failed() {
		return fmt.Errorf("dlq: publish: class %q: want one of %v", r.Class, outcome.Failures)
	}
	ctx, span := tracing.Start(ctx, "ksync.dead_letter", trace.WithAttributes(tracing.AttrDLQClass.String(r.Class.String())))
	defer span.End()
	r.Object = ""
	msg := &nats.Msg{Subject: subject, Header: r.Header(), Data: r.Payload}
	id := MsgID(r)
	obj, err := fitEntry(ctx, js, msg, r, id)
	if err != nil {
		return err
	}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		// The entry may be stored even so (an ack lost on the way): its
		// object stays.
		return fmt.Errorf("dlq: publish to %s: %w", subject, err)
	}
	if obj != "" && ack.Duplicate {
		// The entry stored before names its own object; this one is
		// nobody's.
		_ = deleteObject(ctx, js, obj)
	}
	return nil
}

// MsgID is the Nats-Msg-Id under which [Publish] stores r:
// "ksync-dlq-<workflow>-<stream seq>-<class>-<hash>", the hash covering the
// items and, when the original sequence is unknown, the original message id,
// subject and payload.
func MsgID(r Record) string {
	h := sha256.New()
	h.Write([]byte(FormatItems(r.Items)))
	if r.StreamSeq == 0 {
		for _, s := range []string{r.MsgID, r.Subject} {
			h.Write([]byte{0})
			h.Write([]byte(s))
		}
		h.Write([]byte{0})
		h.Write(r.Payload)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	return "ksync-dlq-" + r.Workflow + "-" + strconv.FormatUint(r.StreamSeq, 10) + "-" + r.Class.String() + "-" + sum
}
