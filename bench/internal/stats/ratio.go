package stats

import (
	"fmt"
	"math"
	"math/rand/v2"

	"golang.org/x/perf/benchmath"
)

// RatioCI is the ratio of two samples' medians, median(x) / median(base),
// with a confidence interval. For latencies a Ratio below 1 means x is
// faster than base; Speedup turns it into "x is N times faster".
type RatioCI struct {
	// Ratio is median(x) / median(base).
	Ratio float64
	// Low and High bound Ratio's confidence interval (percentile bootstrap).
	Low, High float64
	// Confidence is the interval's confidence level (0.95 by default).
	Confidence float64
	// P is the Mann-Whitney U test's p-value for "x and base come from the
	// same distribution", as benchstat reports it; below 0.05 the two
	// differ.
	P float64
	// NBase and NX are the sample sizes after dropping non-finite values.
	NBase, NX int
}

// Speedup returns the interval of median(base) / median(x), the inverse
// ratio: how many times faster x is than base when the samples are
// latencies (or how many times smaller, for any cost).
func (r RatioCI) Speedup() RatioCI {
	out := r
	out.Ratio = 1 / r.Ratio
	out.Low, out.High = 1/r.High, 1/r.Low
	out.NBase, out.NX = r.NX, r.NBase
	return out
}

// String formats the ratio and its interval as "47.1× [44×, 51.2×]" (three
// significant digits), or "n/a" when there is no ratio.
func (r RatioCI) String() string {
	if math.IsNaN(r.Ratio) {
		return "n/a"
	}
	if math.IsNaN(r.Low) || math.IsNaN(r.High) {
		return fmt.Sprintf("%.3g×", r.Ratio)
	}
	return fmt.Sprintf("%.3g× [%.3g×, %.3g×]", r.Ratio, r.Low, r.High)
}

// RatioOptions tunes RatioWith. The zero value means the defaults.
type RatioOptions struct {
	// Confidence is the interval's level; 0 means Confidence (0.95).
	Confidence float64
	// Resamples is the number of bootstrap resamples; 0 means 2000.
	Resamples int
	// Seed seeds the bootstrap's generator; the same seed and samples give
	// the same interval.
	Seed uint64
}

// DefaultResamples is the number of bootstrap resamples Ratio draws: enough
// for the 2.5th and 97.5th percentiles to move by well under 1% between
// seeds on samples of 10 or more.
const DefaultResamples = 2000

// Ratio returns median(x) / median(base) with a 95% percentile-bootstrap
// confidence interval from a fixed seed. Non-finite values are dropped. If
// either sample is empty or median(base) is 0, every field is NaN (and the
// sizes say why).
func Ratio(base, x []float64) RatioCI {
	return RatioWith(base, x, RatioOptions{})
}

// RatioWith is Ratio with a chosen confidence level, resample count and
// seed.
//
// The interval resamples each sample with replacement (independently), takes
// the ratio of the resamples' medians, and reports the (1-c)/2 and (1+c)/2
// quantiles of those ratios (method 8). Each resample's median is found in
// linear time: a resample of a sorted sample is a multiset of indices, and
// its median is the value at the middle index, found by counting.
func RatioWith(base, x []float64, o RatioOptions) RatioCI {
	if o.Confidence <= 0 || o.Confidence >= 1 {
		o.Confidence = Confidence
	}
	if o.Resamples <= 0 {
		o.Resamples = DefaultResamples
	}
	bs, xs := sortedFinite(base), sortedFinite(x)
	nan := math.NaN()
	out := RatioCI{Ratio: nan, Low: nan, High: nan, P: nan, Confidence: o.Confidence, NBase: len(bs), NX: len(xs)}
	if len(bs) == 0 || len(xs) == 0 || median(bs) == 0 {
		return out
	}
	out.Ratio = median(xs) / median(bs)
	cmp := benchmath.AssumeNothing.Compare(
		benchmath.NewSample(append([]float64(nil), bs...), &benchmath.DefaultThresholds),
		benchmath.NewSample(append([]float64(nil), xs...), &benchmath.DefaultThresholds))
	out.P = cmp.P

	rng := rand.New(rand.NewPCG(o.Seed, 0x6b75617361722d62)) // "kuasar-b"
	countsB, countsX := make([]int, len(bs)), make([]int, len(xs))
	ratios := make([]float64, 0, o.Resamples)
	for range o.Resamples {
		mb := resampleMedian(rng, bs, countsB)
		if mb == 0 {
			continue // an undefined ratio; dropping it widens nothing
		}
		ratios = append(ratios, resampleMedian(rng, xs, countsX)/mb)
	}
	if len(ratios) == 0 {
		return out
	}
	sortFloats(ratios)
	out.Low = quantileSorted(ratios, (1-o.Confidence)/2)
	out.High = quantileSorted(ratios, (1+o.Confidence)/2)
	return out
}

// resampleMedian draws len(xs) indices into the sorted sample xs with
// replacement and returns the median of the values drawn. counts is
// scratch space of len(xs).
func resampleMedian(rng *rand.Rand, xs []float64, counts []int) float64 {
	n := len(xs)
	clear(counts)
	for range n {
		counts[rng.IntN(n)]++
	}
	// The values drawn, in order, are xs[i] repeated counts[i] times; the
	// median is the element at rank (n-1)/2 (and n/2 when n is even).
	lo, hi := (n-1)/2, n/2
	var vlo, vhi float64
	seen := 0
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if seen <= lo && lo < seen+c {
			vlo = xs[i]
		}
		if seen <= hi && hi < seen+c {
			vhi = xs[i]
			break
		}
		seen += c
	}
	return (vlo + vhi) / 2
}
