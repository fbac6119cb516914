package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kustomer-sync/kustomer-sync/admin"
)

// healthcheckCommand asks a running replica's admin server whether it is
// ready, for container health checks in images without a shell or wget
// (the distroless image): exit 0 when /readyz answers 200, 1 otherwise.
func (a *app) healthcheckCommand() *cobra.Command {
	var addr string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the replica on this machine is ready (its admin server's /readyz), 1 if not",
		Long: `Ask the admin server of the replica on this machine (--admin-addr, the same variable
KSYNC_ADMIN_ADDR that run reads) for GET /readyz, and exit 0 when it answers 200 (NATS reachable,
every workflow consuming), 1 otherwise, printing why. For container health checks: the image has
no shell and no wget. An address that listens on every interface (0.0.0.0:9090, :9090) is asked
on loopback.`,
		Example: `  kustomer-sync healthcheck
  kustomer-sync healthcheck --admin-addr 127.0.0.1:9091
  # docker-compose.yml: healthcheck: {test: ["CMD", "/usr/local/bin/kustomer-sync", "healthcheck"]}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := readyzURL(addr)
			if err != nil {
				return usageError{fmt.Errorf("--admin-addr %q: %w", addr, err)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("not ready: no answer from %s: %w", url, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			// /readyz says "not ready:" then a reason a line: one line here.
			said := strings.TrimSpace(string(body))
			said = strings.TrimSpace(strings.TrimPrefix(said, "not ready:"))
			said = strings.Join(strings.Fields(strings.ReplaceAll(said, "\n", "; ")), " ")
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("not ready: %s answered %s: %s", url, resp.Status, said)
			}
			// /readyz says "ready": print it once, and anything more after it.
			said = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(said, "ready"), ":"))
			if said == "" {
				_, err = fmt.Fprintln(a.stdout, "ready")
			} else {
				_, err = fmt.Fprintf(a.stdout, "ready: %s\n", said)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&addr, "admin-addr", admin.AddrDefault, "the admin server's address, as given to run")
	fl.DurationVar(&timeout, "timeout", 3*time.Second, "give up after this long")
	bindEnv(fl, "admin-addr", "KSYNC_ADMIN_ADDR")
	return cmd
}

// readyzURL is the /readyz URL of an admin server listening on addr, asked
// on loopback when addr listens on every interface.
func readyzURL(addr string) (string, error) {
	if addr == "off" {
		return "", fmt.Errorf("the admin server is off: there is nothing to ask")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
