package stats

import (
	"math"
	"slices"
	"time"
)

// Run is one timed batch of operations: Ops operations finished in Elapsed.
type Run struct {
	Ops     float64
	Elapsed time.Duration
}

// ThroughputSummary describes operations per second over repeated runs.
type ThroughputSummary struct {
	// Runs is the number of runs with a positive duration.
	Runs int
	// Median, Min and Max are of the per-run rates (operations/second);
	// MedianLow and MedianHigh bound the median's 95% interval as in
	// Summary.
	Median, Min, Max      float64
	MedianLow, MedianHigh float64
	// Overall is the total operations over the total time: the rate a
	// user would see running every run back to back.
	Overall float64
	// Ops and Seconds are the totals behind Overall.
	Ops, Seconds float64
}

// Throughput summarises runs as operations per second. Runs with a zero or
// negative duration are skipped (they have no rate); with none left the
// rates are NaN.
func Throughput(runs []Run) ThroughputSummary {
	rates := make([]float64, 0, len(runs))
	var out ThroughputSummary
	for _, r := range runs {
		if r.Elapsed <= 0 {
			continue
		}
		s := r.Elapsed.Seconds()
		rates = append(rates, r.Ops/s)
		out.Ops += r.Ops
		out.Seconds += s
	}
	sum := Summarize(rates)
	out.Runs = sum.N
	out.Median, out.Min, out.Max = sum.Median, sum.Min, sum.Max
	out.MedianLow, out.MedianHigh = sum.MedianLow, sum.MedianHigh
	out.Overall = math.NaN()
	if out.Seconds > 0 {
		out.Overall = out.Ops / out.Seconds
	}
	return out
}

// sortFloats sorts xs in place.
func sortFloats(xs []float64) { slices.Sort(xs) }
