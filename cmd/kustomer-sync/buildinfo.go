package main

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metricBuildInfo is 1, labelled with what is running: dashboards join on it
// and a rolling upgrade shows as two versions side by side.
var metricBuildInfo = promauto.NewGaugeVec(prometheus.GaugeOpts{
	Name: "kustomer_sync_build_info",
	Help: "Always 1; its labels say which kustomer-sync version, built with which Go, is running.",
}, []string{"version", "goversion"})

func init() { metricBuildInfo.WithLabelValues(version, runtime.Version()).Set(1) }
