// Package overflow keeps records within the server's limits: it tells
// whether a message fits the max_payload the connection reports (and the
// header size JetStream accepts), and stores what does not fit in a
// JetStream Object Store bucket, so a record too big for one message is
// referenced, never dropped. The dead-letter store (dlq) and the run log
// both use it, and share its stream limits: a stream of records and the
// bucket beside it take the same byte limit and replicas.
//
// The functions are safe for concurrent use; they hold no state.
package overflow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// MaxBytesDefault bounds a stream of records, and its bucket, at 1 GiB.
	MaxBytesDefault int64 = 1 << 30
	// ReplicasDefault is one replica; use 3 on a 3-node cluster.
	ReplicasDefault = 1

	// MaxHeaderBytes is the most header bytes JetStream stores with a
	// message (it refuses more with error code 10097, "header size exceeds
	// maximum allowed of 64k").
	MaxHeaderBytes = 1<<16 - 1
	// Headroom is what a message needs beyond its headers and body: the
	// Nats-Msg-Id header JetStream options add, and a margin.
	Headroom = 512

	// maxPayloadUnknown is the limit assumed when the connection reports
	// none (not connected yet): a small one, so anything large goes to an
	// object rather than being refused.
	maxPayloadUnknown = 64 << 10
	// chunkMax is the largest chunk an object is stored in.
	chunkMax = 128 << 10
	// chunkMin is the smallest, for a server with a tiny max_payload.
	chunkMin = 1 << 10
)

// Limits are what a stream of records and its overflow bucket share. The
// zero value means no age limit, [MaxBytesDefault] and [ReplicasDefault]
// once [Limits.WithDefaults] has filled it.
type Limits struct {
	MaxAge   time.Duration // 0: no age limit; negative is an error
	MaxBytes int64         // default MaxBytesDefault; negative is an error
	Replicas int           // default ReplicasDefault; 1 to 5
}

// WithDefaults fills MaxBytes and Replicas with their defaults when zero.
// MaxAge is left alone: each stream has its own default.
func (l Limits) WithDefaults() Limits {
	if l.MaxBytes == 0 {
		l.MaxBytes = MaxBytesDefault
	}
	if l.Replicas == 0 {
		l.Replicas = ReplicasDefault
	}
	return l
}

// Validate reports the first limit out of range. The error starts with
// what, the caller's name for the stream ("dlq: stream LEADS_DLQ"), so the
// message names the package and stream the user configured.
func (l Limits) Validate(what string) error {
	switch {
	case l.MaxAge < 0:
		return fmt.Errorf("%s: negative MaxAge %v", what, l.MaxAge)
	case l.MaxBytes < 0:
		return fmt.Errorf("%s: negative MaxBytes %d", what, l.MaxBytes)
	case l.Replicas < 1 || l.Replicas > 5:
		return fmt.Errorf("%s: Replicas %d: want 1 to 5", what, l.Replicas)
	}
	return nil
}

// MaxPayload is the server's limit on one message, read from the
// connection; 64 KiB when the connection reports none.
func MaxPayload(js jetstream.JetStream) int {
	if nc := js.Conn(); nc != nil && nc.MaxPayload() > 0 {
		return int(nc.MaxPayload())
	}
	return maxPayloadUnknown
}

// MsgSize is the size the server counts for m: its headers as encoded, and
// its body.
func MsgSize(m *nats.Msg) int {
	n := len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(": \r\n") + len(v)
			}
		}
	}
	return n
}

// HeaderSize is the size of m's headers as encoded.
func HeaderSize(m *nats.Msg) int {
	return MsgSize(&nats.Msg{Header: m.Header})
}

// Fits reports whether m, with a Nats-Msg-Id and a margin ([Headroom]), can
// be published: within the server's max_payload and JetStream's header
// limit.
func Fits(js jetstream.JetStream, m *nats.Msg) bool {
	return MsgSize(m)+Headroom <= MaxPayload(js) && HeaderSize(m)+Headroom <= MaxHeaderBytes
}

// Bucket describes an Object Store bucket that keeps what overflows a
// stream of records.
type Bucket struct {
	Name        string
	Description string
	// Limits: MaxAge is the objects' TTL (0: they live until deleted),
	// MaxBytes the bucket's size, Replicas its replicas.
	Limits Limits
}

// Ensure creates the bucket, or updates it to b. It is safe to call from
// every replica at start.
func Ensure(ctx context.Context, js jetstream.JetStream, b Bucket) error {
	_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      b.Name,
		Description: b.Description,
		TTL:         b.Limits.MaxAge,
		MaxBytes:    b.Limits.MaxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    b.Limits.Replicas,
	})
	if err != nil {
		return fmt.Errorf("overflow: ensure object store %s: %w", b.Name, err)
	}
	return nil
}

// Open opens an existing bucket.
func Open(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("overflow: object store %s: %w", bucket, err)
	}
	return obs, nil
}

// Put stores data as object name of bucket, replacing one of that name, in
// chunks the server accepts (at most 128 KiB, less than its max_payload).
func Put(ctx context.Context, js jetstream.JetStream, bucket, name string, data []byte) error {
	obs, err := Open(ctx, js, bucket)
	if err != nil {
		return err
	}
	chunk := max(min(chunkMax, MaxPayload(js)-Headroom), chunkMin)
	meta := jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(chunk)}}
	if _, err := obs.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("overflow: store object %s in %s: %w", name, bucket, err)
	}
	return nil
}

// Get reads object name of bucket. An object that does not exist is an
// error wrapping [jetstream.ErrObjectNotFound].
func Get(ctx context.Context, js jetstream.JetStream, bucket, name string) ([]byte, error) {
	obs, err := Open(ctx, js, bucket)
	if err != nil {
		return nil, err
	}
	data, err := obs.GetBytes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("overflow: object %s in %s: %w", name, bucket, err)
	}
	return data, nil
}

// Delete removes object name of bucket; one already gone is not an error.
func Delete(ctx context.Context, js jetstream.JetStream, bucket, name string) error {
	obs, err := Open(ctx, js, bucket)
	if err != nil {
		return err
	}
	if err := obs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("overflow: delete object %s from %s: %w", name, bucket, err)
	}
	return nil
}
