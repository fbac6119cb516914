package main

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is 1, labelled with what is running: dashboards join on it and
// a rolling upgrade shows as two versions side by side.
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kustomer_sync_build_info",
		Help: "Always 1; its labels say which kustomer-sync version, built with which Go, is running.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	return g
}
