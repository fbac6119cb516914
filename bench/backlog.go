package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/kustomer-sync/kustomer-sync/ingest"
	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
	"github.com/kustomer-sync/kustomer-sync/worker"
)

// backlog is what a mode or pipeline run drains: an embedded NATS server in
// a temporary folder, a Kustomer sandbox, and the LEADS stream holding
// single-lead events, each with its id as externalId so the sandbox counts
// duplicates.
type backlog struct {
	dir string
	ns  *server.Server
	sb  *sandbox.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

// newBacklog starts the server and the sandbox and publishes events leads
// on leads.bench. The caller closes it.
func newBacklog(ctx context.Context, events int, sc sandbox.Config, opts []nats.Option, log zerolog.Logger) (_ *backlog, err error) {
	b := &backlog{}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close(ctx))
		}
	}()
	if b.dir, err = os.MkdirTemp("", "kustomer-sync-bench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if b.ns, err = worker.StartEmbedded(worker.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: b.dir}); err != nil {
		return nil, err
	}
	if b.sb, err = sandbox.Start("127.0.0.1:0", sc, log); err != nil {
		return nil, err
	}
	if b.nc, err = nats.Connect(b.ns.ClientURL(), append(opts, nats.Name("bench-publisher"))...); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if _, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: worker.StreamDefault, Subjects: []string{"leads.>"}, Storage: jetstream.FileStorage,
		Duplicates: worker.DedupWindowDefault, MaxAge: worker.StreamMaxAgeDefault}); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	evs := make([]ingest.Event, events)
	for i := range evs {
		evs[i] = ingest.Event{Line: i + 1, ID: fmt.Sprintf("bench-%d", i), Data: fmt.Appendf(nil, `{"id":"lead-%d","name":"Lead %d","email":"lead%d@example.com"}`, i, i, i)}
	}
	if _, err := (ingest.Publisher{JS: b.js, Timeout: 10 * time.Minute}).Publish(ctx, "leads.bench", evs); err != nil {
		return nil, err
	}
	return b, nil
}

// close stops everything newBacklog started and removes the folder.
func (b *backlog) close(ctx context.Context) error {
	var err error
	if b.nc != nil {
		b.nc.Close()
	}
	if b.sb != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sandbox.ShutdownTimeoutDefault)
		err = b.sb.Shutdown(sctx)
		cancel()
	}
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns.WaitForShutdown()
	}
	if b.dir != "" {
		err = errors.Join(err, os.RemoveAll(b.dir))
	}
	return err
}
