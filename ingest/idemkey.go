package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Idempotency-Key defaults of [HandlerConfig].
const (
	// KeyBucketDefault is the KV bucket that remembers, per workflow and
	// Idempotency-Key, a digest of the request first sent with it.
	KeyBucketDefault = "KSYNC_INGEST_KEYS"
	// KeyWindowDefault is how long a key is remembered when the stream's
	// duplicate window cannot be read: the leads stream's default.
	KeyWindowDefault = 24 * time.Hour
)

// errKeyReused means an Idempotency-Key came back with another request.
var errKeyReused = errors.New("ingest: Idempotency-Key reused with another body")

// keyBucket opens, once, the bucket of Idempotency-Keys, remembering each for
// the duplicate window of the stream that stores subj (KeyWindow when set):
// as long as JetStream takes a retry for a duplicate. Every replica shares
// it, so a key reused through another replica is seen too.
func (h *Handler) keyBucket(ctx context.Context, subj string) (jetstream.KeyValue, error) {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	if h.keys != nil {
		return h.keys, nil
	}
	window := h.cfg.KeyWindow
	if window == 0 {
		window = KeyWindowDefault
		if name, err := h.cfg.JS.StreamNameBySubject(ctx, subj); err == nil {
			if st, err := h.cfg.JS.Stream(ctx, name); err == nil && st.CachedInfo().Config.Duplicates > 0 {
				window = st.CachedInfo().Config.Duplicates
			}
		}
	}
	kv, err := h.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      h.cfg.KeyBucket,
		Description: "kustomer-sync: HTTP ingest Idempotency-Keys and the request each was first sent with",
		TTL:         window,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("ingest: Idempotency-Key bucket %s: %w", h.cfg.KeyBucket, err)
	}
	h.keys = kv
	return kv, nil
}

// claimKey remembers key, of workflow wf, as sent with the request whose
// events evs go to subj, or checks that it was: errKeyReused when the key
// was sent before with another request (its events, or its subject).
func (h *Handler) claimKey(ctx context.Context, wf, key, subj string, evs []Event) error {
	kv, err := h.keyBucket(ctx, subj)
	if err != nil {
		return err
	}
	name := sha256.Sum256([]byte(wf + "\x00" + key))
	k := "key." + hex.EncodeToString(name[:16])
	digest := sha256.New()
	digest.Write([]byte(subj))
	for _, ev := range evs {
		sum := sha256.Sum256(ev.Data)
		digest.Write([]byte{0})
		digest.Write(sum[:])
	}
	want := hex.EncodeToString(digest.Sum(nil))
	for range 2 {
		if _, err = kv.Create(ctx, k, []byte(want)); err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			break
		}
		e, gerr := kv.Get(ctx, k)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			continue // expired meanwhile
		case gerr != nil:
			err = gerr
		case string(e.Value()) != want:
			return errKeyReused
		default:
			return nil // a retry of the same request
		}
		break
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		// Deleted while running: made again at the next request.
		h.keysMu.Lock()
		h.keys = nil
		h.keysMu.Unlock()
	}
	return fmt.Errorf("ingest: Idempotency-Key bucket %s: %w", h.cfg.KeyBucket, err)
}
