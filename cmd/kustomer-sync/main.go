// Command kustomer-sync turns lead events on NATS JetStream into Kustomer customers.
//
// Run `kustomer-sync --help` for the commands, or `kustomer-sync demo` to see it work with no setup.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// stopSignals end a command gracefully: `run` drains. `run` also catches
// SIGHUP, to reload its workflow config (see reload.go).
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kustomer-sync:", err)
		os.Exit(exitCode(err))
	}
}
