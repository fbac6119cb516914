package main

import (
	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/kustomer/sandbox"
)

func (a *app) sandboxCommand() *cobra.Command {
	var (
		addr string
		cfg  sandbox.Config
	)
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Serve a local Kustomer sandbox (a faithful fake of the Kustomer API)",
		Long: `Serve a local Kustomer: POST /v1/customers with Kustomer's closed-schema validation,
look-ups by externalId, bulk, an org-wide rate budget with x-ratelimit-* headers and 429s,
an optional bearer-key check, and fault injection for testing retries and pauses.
Point a worker at it with --kustomer-base-url http://ADDR and any KUSTOMER_API_KEY.`,
		Example: `  kustomer-sync sandbox --addr 127.0.0.1:8080 --rate-per-minute 300
  kustomer-sync sandbox --error-rate 0.2 --latency 50ms`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	fl.Float64Var(&cfg.TimeoutRate, "timeout-rate", 0, "share of creates stored but not answered until the client gives up")
	fl.BoolVar(&cfg.Outage, "outage", false, "answer every request 503")
	fl.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault randomness")
	bindEnv(fl, "addr", "KSYNC_SANDBOX_ADDR")
	return cmd
}
