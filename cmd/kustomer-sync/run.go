package main

import (
	"context"

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

Without --nats-url (or NATS_URL) it starts an embedded NATS server with JetStream on
127.0.0.1:4222, its store in --data-dir, so 'publish', 'dlq' and 'runs' reach it without flags.

It needs a Kustomer API key (KUSTOMER_API_KEY or --kustomer-api-key-file), or --sandbox to run
against a local Kustomer sandbox. SIGINT, SIGTERM and SIGHUP drain: events in flight finish
within --drain-timeout or are left unacknowledged for redelivery. SIGHUP does not reload the
workflow config: restart the process to apply a new one.`,
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
			<-ctx.Done()
			a.log.Info().Dur("deadline", f.drainTimeout).Msg("shutting down: draining in-flight events")
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.drainTimeout)
			defer cancel()
			st.stop(stopCtx, a)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
