package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func (a *app) runCommand() *cobra.Command {
	var f workerFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the worker: consume lead events and create Kustomer customers",
		Long: `Run the worker. It creates (or checks) the leads stream and one durable pull consumer per
workflow, maps each event with the workflow's templates, creates the customers in Kustomer under
the org-wide rate budget, retries transient failures, dead-letters what cannot succeed, writes a
run record, and only then acknowledges the event.

A leads stream it created captures exactly the workflows' subjects (updated at each start) and
keeps events for --stream-max-age; a stream an operator created must capture every workflow's
subject, or run refuses to start and says which. A workflow's consumer, when first created,
starts where the workflow's "start" says: by default with every event the stream holds on its
subject (a renamed workflow continues where its old name's consumer stopped); start: new or a
start time skip events, and run warns how many.

Without --nats-url (or NATS_URL) it starts an embedded NATS server with JetStream on
127.0.0.1:4222, its store in --data-dir, so 'publish', 'dlq' and 'runs' reach it without flags.

It needs a Kustomer API key (KUSTOMER_API_KEY or --kustomer-api-key-file), or --sandbox to run
against a local Kustomer sandbox. SIGINT and SIGTERM drain: events in flight finish within
--drain-timeout or are left unacknowledged for redelivery.

SIGHUP reloads the --config file: it is validated first, and a bad file is refused (the log
says why) while the running workflows go on. A good one replaces them: the worker drains as on
SIGTERM, then starts with the new workflows (consumers of new workflows are created; removed
workflows stop being consumed, their durable consumers are kept). If the new workflows cannot
start (e.g. a subject the stream does not capture), the previous ones start again.`,
		Example: `  # zero setup: embedded NATS and a local Kustomer sandbox
  kustomer-sync run --sandbox

  # production: a NATS cluster and a real Kustomer account, 3 replicas share 1000/min
  export NATS_URL=nats://nats-1:4222,nats://nats-2:4222 KUSTOMER_API_KEY=...
  kustomer-sync run --config workflows.yaml --rate-per-minute 1000 --stream-replicas 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(cmd); err != nil {
				return err
			}
			// Caught before anything starts, so a SIGHUP never kills the
			// worker; reloads wait until it has started.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ctx := cmd.Context()
			st, err := a.startStack(ctx, &f)
			if err != nil && ctx.Err() != nil {
				// Stopped while starting: nothing was consumed, so there is
				// nothing to drain and nothing went wrong.
				a.log.Info().Msg("stopped while starting")
				return nil
			}
			if err != nil {
				return err
			}
			reloads := reloadsMetric(st.registry)
			for err == nil && ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-hup:
					err = st.reload(ctx, a, &f, reloads)
				case <-st.adminFailed():
					err = st.admin.Err()
				}
			}
			a.log.Info().Stringer("deadline", f.drainTimeout).Msg("shutting down: draining in-flight events")
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.drainTimeout)
			defer cancel()
			st.stop(stopCtx, a)
			return err
		},
	}
	f.register(cmd)
	return cmd
}
