// Package stats is a stand-in for h-plot's statistics library, removed when
// that branch is merged.
package stats

import (
	"math"
	"slices"
)

// Summary describes one sample.
type Summary struct {
	N                                int
	Min, Median, P95, P99, Max, Mean float64
}

// Summarize returns the summary of samples.
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	q := func(p float64) float64 { return s[int(math.Round(p*float64(len(s)-1)))] }
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return Summary{N: len(s), Min: s[0], Median: q(0.5), P95: q(0.95), P99: q(0.99), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// RatioCI is a ratio of medians with an interval.
type RatioCI struct{ Ratio, Low, High float64 }

// Ratio is median(x)/median(base).
func Ratio(base, x []float64) RatioCI {
	r := Summarize(x).Median / Summarize(base).Median
	return RatioCI{r, r, r}
}

// Speedup is the inverse ratio.
func (r RatioCI) Speedup() RatioCI { return RatioCI{1 / r.Ratio, 1 / r.High, 1 / r.Low} }
