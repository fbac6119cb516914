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
	"github.com/kustomer-sync/kustomer-sync/leads"
	"github.com/kustomer-sync/kustomer-sync/natsserver"
)

// backlog is what a benchmark drains: an embedded NATS server in a
// temporary folder, a Kustomer sandbox, and a connection that publishes
// lead events on leads.bench.
type backlog struct {
	dir string
	ns  *server.Server
	sb  *sandbox.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

// startBacklog starts the server and the sandbox. The caller closes it.
func startBacklog(ctx context.Context, sc sandbox.Config, opts []nats.Option, log zerolog.Logger) (_ *backlog, err error) {
	b := &backlog{}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close(ctx))
		}
	}()
	if b.dir, err = os.MkdirTemp("", "kustomer-sync-bench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if b.ns, err = natsserver.Start(natsserver.Config{Addr: "127.0.0.1:0", StoreDir: b.dir}); err != nil {
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
	return b, nil
}

// newBacklog starts a backlog and, before any worker runs, creates the leads
// stream and publishes n lead events, perEvent leads in each ("leads",
// a list, when more than one), each lead with its id as externalId so the
// sandbox counts duplicates.
func newBacklog(ctx context.Context, n, perEvent int, sc sandbox.Config, opts []nats.Option, log zerolog.Logger) (_ *backlog, err error) {
	b, err := startBacklog(ctx, sc, opts, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close(ctx))
		}
	}()
	if _, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: leads.StreamDefault, Subjects: []string{"leads.>"}, Storage: jetstream.FileStorage,
		Duplicates: leads.DedupWindowDefault, MaxAge: leads.StreamMaxAgeDefault}); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	lead := func(i int) []byte {
		return fmt.Appendf(nil, `{"id":"lead-%d","name":"Lead %d","email":"lead%d@example.com"}`, i, i, i)
	}
	if perEvent <= 1 {
		return b, b.publish(ctx, n, 10*time.Minute, lead)
	}
	events := (n + perEvent - 1) / perEvent
	err = b.publish(ctx, events, 10*time.Minute, func(e int) []byte {
		body := []byte(`{"leads":[`)
		for i := e * perEvent; i < min((e+1)*perEvent, n); i++ {
			if i > e*perEvent {
				body = append(body, ',')
			}
			body = append(body, lead(i)...)
		}
		return append(body, "]}"...)
	})
	return b, err
}

// publishChunk is how many events publish holds at once, so that a large
// backlog does not weigh on the process's memory.
const publishChunk = 2000

// publish puts n events on leads.bench, event i's body from body(i) and
// its Nats-Msg-Id "bench-<i>", within timeout.
func (b *backlog) publish(ctx context.Context, n int, timeout time.Duration, body func(i int) []byte) error {
	for first := 0; first < n; first += publishChunk {
		evs := make([]ingest.Event, min(publishChunk, n-first))
		for j := range evs {
			i := first + j
			evs[j] = ingest.Event{Line: i + 1, ID: fmt.Sprintf("bench-%d", i), Data: body(i)}
		}
		if _, err := (ingest.Publisher{JS: b.js, Timeout: timeout}).Publish(ctx, "leads.bench", evs); err != nil {
			return err
		}
	}
	return nil
}

// close stops everything startBacklog started and removes the folder.
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
