// Package benchratio runs a benchmark against a baseline measured in the
// same run, so that the figure that matters, the ratio, does not drift with
// the host's speed.
package benchratio

import (
	"testing"
	"time"
)

// BaselineRuns is how often Run runs the baseline: enough for operations of
// a microsecond or less.
const BaselineRuns = 20000

// Run times baseline BaselineRuns times, then runs op in the benchmark loop
// and reports op's time over the baseline's as the metric named unit (by
// convention "x_" and what the baseline is, e.g. "x_encoding_json").
func Run(b *testing.B, unit string, baseline, op func()) {
	b.Helper()
	RunN(b, unit, BaselineRuns, baseline, op)
}

// RunN is Run with the baseline run baselineRuns times, for slower
// operations.
func RunN(b *testing.B, unit string, baselineRuns int, baseline, op func()) {
	b.Helper()
	start := time.Now()
	for range baselineRuns {
		baseline()
	}
	base := time.Since(start) / time.Duration(baselineRuns)
	b.ReportAllocs()
	b.ResetTimer()
	start = time.Now()
	n := 0
	for b.Loop() {
		op()
		n++
	}
	per := time.Since(start) / time.Duration(n)
	b.ReportMetric(float64(per)/float64(base), unit)
}
