// Package stats summarises benchmark samples for the `kuasar bench` harness:
// quantiles, the ratio of two samples' medians with a confidence interval,
// and throughput.
//
// Quantiles use Hyndman and Fan's method 8 (approximately median-unbiased,
// the method of go-moremath's stats.Sample.Quantile, which benchstat uses):
// for n sorted values x[1..n] and probability p, h = (n+1/3)p + 1/3, and the
// quantile is x[⌊h⌋] + (h-⌊h⌋)(x[⌊h⌋+1]-x[⌊h⌋]), clamped to x[1] and x[n].
// The median is the usual one (the middle value, or the mean of the two
// middle values) under every Hyndman-Fan method.
//
// The median's confidence interval and the Mann-Whitney U test come from
// golang.org/x/perf/benchmath (benchstat's statistics), so figures match
// `benchstat`'s. benchmath has no interval for a ratio of medians, so Ratio
// computes one by a percentile bootstrap with a fixed-seed generator: the
// same samples always give the same interval.
package stats

import (
	"math"
	"slices"

	"golang.org/x/perf/benchmath"
)

// Confidence is the confidence level of every interval this package reports
// unless a caller asks for another.
const Confidence = 0.95

// Summary describes one sample: its size, order statistics and mean. Values
// that are NaN or infinite are not counted (N says how many were).
type Summary struct {
	N      int
	Min    float64
	Median float64
	P95    float64
	P99    float64
	Max    float64
	Mean   float64
	// MedianLow and MedianHigh bound the median's 95% confidence interval
	// (benchstat's distribution-free interval); they are -Inf and +Inf
	// when the sample is too small for one (fewer than 6 values).
	MedianLow, MedianHigh float64
}

// Summarize returns the Summary of samples without modifying it. An empty
// sample (after dropping non-finite values) gives N == 0 and NaN fields.
func Summarize(samples []float64) Summary {
	xs := sortedFinite(samples)
	if len(xs) == 0 {
		nan := math.NaN()
		return Summary{Min: nan, Median: nan, P95: nan, P99: nan, Max: nan, Mean: nan, MedianLow: nan, MedianHigh: nan}
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	ci := benchmath.AssumeNothing.Summary(benchmath.NewSample(slices.Clone(xs), &benchmath.DefaultThresholds), Confidence)
	return Summary{
		N:          len(xs),
		Min:        xs[0],
		Median:     median(xs),
		P95:        quantileSorted(xs, 0.95),
		P99:        quantileSorted(xs, 0.99),
		Max:        xs[len(xs)-1],
		Mean:       sum / float64(len(xs)),
		MedianLow:  ci.Lo,
		MedianHigh: ci.Hi,
	}
}

// Quantile returns the p-quantile (0 <= p <= 1) of samples by Hyndman and
// Fan's method 8 (see the package documentation), ignoring non-finite
// values. It returns NaN for an empty sample or a p outside [0, 1].
func Quantile(samples []float64, p float64) float64 {
	if !(p >= 0 && p <= 1) {
		return math.NaN()
	}
	return quantileSorted(sortedFinite(samples), p)
}

// sortedFinite returns a sorted copy of samples without NaN and ±Inf.
func sortedFinite(samples []float64) []float64 {
	xs := make([]float64, 0, len(samples))
	for _, x := range samples {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			xs = append(xs, x)
		}
	}
	slices.Sort(xs)
	return xs
}

// quantileSorted is Quantile on an already sorted, finite sample.
func quantileSorted(xs []float64, p float64) float64 {
	n := len(xs)
	if n == 0 {
		return math.NaN()
	}
	if p == 0.5 {
		return median(xs)
	}
	h := (float64(n)+1.0/3)*p + 1.0/3 // 1-based position
	k := int(math.Floor(h))
	switch {
	case k < 1:
		return xs[0]
	case k >= n:
		return xs[n-1]
	}
	return xs[k-1] + (h-float64(k))*(xs[k]-xs[k-1])
}

// median is the middle value of a sorted, non-empty sample, or the mean of
// the two middle values.
func median(xs []float64) float64 {
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
