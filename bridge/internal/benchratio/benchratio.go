// Package benchratio runs a benchmark against a baseline measured in the
// same run, so that the figure that matters, the ratio, does not drift with
// the host's speed.
package benchratio

import (
	"testing"
	"time"
)

// baselineRuns is how often the baseline runs before the benchmark loop.
const baselineRuns = 20000

// Run times baseline baselineRuns times, then runs op in the benchmark loop
// and reports op's time over the baseline's as the metric named unit (by
// convention "x_" and what the baseline is, e.g. "x_encoding_json").
func Run(b *testing.B, unit string, baseline, op func()) {
	b.Helper()
	start := time.Now()
	for range baselineRuns {
		baseline()
	}
	base := time.Since(start) / baselineRuns
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
