//go:build !unix

package bench

import "time"

// processCPU is not measured on this system.
func processCPU() time.Duration { return 0 }

// PeakRSS is not measured here.
func PeakRSS() int64 { return 0 }

// ResetPeakRSS does nothing here.
func ResetPeakRSS() {}
