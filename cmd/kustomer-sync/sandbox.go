package main

import (
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func (a *app) sandboxCommand() *cobra.Command {
	var (
		addr     string
		cfg      sandbox.Config
		jobModel string
	)
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Serve a local Kustomer sandbox (a faithful fake of the Kustomer API)",
		Long: `Serve a local Kustomer: POST /v1/customers with Kustomer's closed-schema validation,
look-ups by externalId, email and phone, PUT /v1/customers/{id}?replace=false,
asynchronous bulk jobs (POST /v1/customers/bulk, then GET /v1/bulk/{id} and
/v1/bulk/{id}/batches), an org-wide rate budget with x-ratelimit-* headers and 429s
(every request, bulk polls included, spends one unit), an optional bearer-key check,
and fault injection for testing retries and pauses.
Point a worker at it with --kustomer-base-url http://ADDR and any KUSTOMER_API_KEY.

Each request is logged at info (method, path, status, time taken; never a header).
GET http://ADDR/_sandbox/customers lists the customers created so far, with their
count (not a Kustomer route: it spends no rate unit and needs no key); the count is
logged again when the sandbox stops.`,
		Example: `  kustomer-sync sandbox --addr 127.0.0.1:8080 --rate-per-minute 300
  kustomer-sync sandbox --error-rate 0.2 --latency 50ms
  kustomer-sync sandbox --bulk-delay 2s --bulk-item-failure-rate 0.01
  kustomer-sync sandbox --job-model spread --bulk-delay 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFlags(cmd,
				share("error-rate"), share("timeout-rate"), share("bulk-item-failure-rate"),
				share("bulk-stuck-rate"), share("bulk-submit-error-rate"), share("bulk-submit-lost-rate"),
				notNegative("latency"), notNegative("window"), notNegative("bulk-delay"),
				notNegative("bulk-delay-min"), notNegative("bulk-submit-late"),
				oneOf("bulk-timing", sandbox.BulkTimings), oneOf("job-model", sandbox.JobModels),
			); err != nil {
				return err
			}
			if jobModel != "" {
				_ = cfg.SetJobModel(jobModel) // checked above
			}
			return sandbox.ListenAndServe(cmd.Context(), addr, cfg, a.log)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	fl.IntVar(&cfg.RatePerMinute, "rate-per-minute", 1000, "org budget per window; negative for unlimited")
	fl.DurationVar(&cfg.Window, "window", 0, "rate-limit window (default 60s)")
	fl.StringVar(&cfg.APIKey, "api-key", "", "when set, requests must carry 'Authorization: Bearer <key>' (else 401)")
	fl.DurationVar(&cfg.Latency, "latency", 0, "latency added to every request")
	fl.Float64Var(&cfg.ErrorRate, "error-rate", 0, "share of requests answered 503")
	fl.Float64Var(&cfg.TimeoutRate, "timeout-rate", 0, "share of creates stored (and bulk jobs queued) but not answered until the client gives up")
	fl.BoolVar(&cfg.Outage, "outage", false, "answer every request 503")
	fl.DurationVar(&cfg.BulkDelay, "bulk-delay", 0, "how long a bulk job takes: queued for the first half, running for the second, then complete")
	fl.Float64Var(&cfg.BulkItemFailureRate, "bulk-item-failure-rate", 0, "share of valid bulk items that fail with a transient 503 in the job's results")
	fl.Float64Var(&cfg.BulkStuckRate, "bulk-stuck-rate", 0, "share of bulk jobs that never complete (and create nothing)")
	fl.Float64Var(&cfg.BulkSubmitErrorRate, "bulk-submit-error-rate", 0, "share of bulk submissions answered 503 (nothing queued)")
	fl.BoolVar(&cfg.BulkRejectInvalid, "bulk-reject-invalid", false, "reject a whole bulk request for one invalid item (default: that item fails alone in the results)")
	fl.StringVar(&jobModel, "job-model", "", "a named set of the bulk job settings below, keeping --bulk-delay: "+strings.Join(sandbox.JobModels, ", "))
	fl.StringVar(&cfg.BulkTiming, "bulk-timing", sandbox.BulkParallel, "how bulk jobs run: parallel (each --bulk-delay), serial (one after another) or spread (each from --bulk-delay-min to --bulk-delay)")
	fl.DurationVar(&cfg.BulkDelayMin, "bulk-delay-min", 0, "with --bulk-timing spread: the shortest job")
	fl.BoolVar(&cfg.BulkBatchesNoStatus, "bulk-batches-no-status", false, "leave status and completed out of /v1/bulk/{id}/batches (only the counts say a job is done)")
	fl.BoolVar(&cfg.BulkBatchesEmptyUntilDone, "bulk-batches-empty-until-done", false, "answer /v1/bulk/{id}/batches with an empty list until the job is complete")
	fl.Float64Var(&cfg.BulkSubmitLostRate, "bulk-submit-lost-rate", 0, "share of bulk submissions queued (the job runs) whose answer is lost")
	fl.DurationVar(&cfg.BulkSubmitLate, "bulk-submit-late", 0, "delay of every bulk submission's answer (the job runs meanwhile)")
	fl.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault randomness")
	bindEnv(fl, "addr", "KSYNC_SANDBOX_ADDR")
	// The sandbox reads no NATS setting: its help lists only the global
	// flags it uses (the log's).
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		var hidden []*pflag.Flag
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !strings.HasPrefix(f.Name, "log-") && !f.Hidden {
				f.Hidden = true
				hidden = append(hidden, f)
			}
		})
		defer func() {
			for _, f := range hidden {
				f.Hidden = false
			}
		}()
		c.Root().HelpFunc()(c, args)
	})
	return cmd
}

// notNegative wants flag name (a duration flag) to be zero or more.
func notNegative(name string) flagCheck {
	return func(cmd *cobra.Command) error {
		d, err := cmd.Flags().GetDuration(name)
		if err != nil || d >= 0 {
			return nil
		}
		return flagError(cmd, name, "want a duration of zero or more, such as 2s")
	}
}

// oneOf wants flag name (a string flag) empty or one of choices.
func oneOf(name string, choices []string) flagCheck {
	return func(cmd *cobra.Command) error {
		v, err := cmd.Flags().GetString(name)
		if err != nil || v == "" || slices.Contains(choices, v) {
			return nil
		}
		return flagError(cmd, name, "want one of %s", strings.Join(choices, ", "))
	}
}
