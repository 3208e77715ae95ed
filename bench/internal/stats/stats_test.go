package stats

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func seq(from, to float64) []float64 {
	var xs []float64
	for x := from; x <= to; x++ {
		xs = append(xs, x)
	}
	return xs
}

func near(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b))
}

func TestQuantile(t *testing.T) {
	// Expected values are R's quantile(x, p, type = 8).
	tests := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"1..100 p95", seq(1, 100), 0.95, 95.65},
		{"1..100 p99", seq(1, 100), 0.99, 99.66333333333333},
		{"1..100 p50", seq(1, 100), 0.5, 50.5},
		{"1..100 p0", seq(1, 100), 0, 1},
		{"1..100 p100", seq(1, 100), 1, 100},
		{"1..10 p95 clamps to max", seq(1, 10), 0.95, 10},
		{"1..10 p10", seq(1, 10), 0.10, 1.3666666666666667},
		{"unsorted odd median", []float64{9, 1, 5}, 0.5, 5},
		{"single", []float64{7}, 0.99, 7},
		{"non-finite dropped", []float64{math.NaN(), 2, math.Inf(1), 4}, 0.5, 3},
		{"empty", nil, 0.5, math.NaN()},
		{"p out of range", seq(1, 3), 1.5, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.xs, tt.p); !near(got, tt.want) {
				t.Fatalf("Quantile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name string
		xs   []float64
		want Summary
	}{
		{"1..10", []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, Summary{N: 10, Min: 1, Median: 5.5, P95: 10, P99: 10, Max: 10, Mean: 5.5, MedianLow: 2, MedianHigh: 9}},
		{"1..100", seq(1, 100), Summary{N: 100, Min: 1, Median: 50.5, P95: 95.65, P99: 99.66333333333333, Max: 100, Mean: 50.5, MedianLow: 40, MedianHigh: 60}},
		{"too few for an interval", []float64{1, 2, 3}, Summary{N: 3, Min: 1, Median: 2, P95: 3, P99: 3, Max: 3, Mean: 2, MedianLow: -inf, MedianHigh: inf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]float64(nil), tt.xs...)
			got := Summarize(in)
			g, w := fmt.Sprint(got), fmt.Sprint(tt.want)
			if got.N != tt.want.N || !near(got.Min, tt.want.Min) || !near(got.Median, tt.want.Median) || !near(got.P95, tt.want.P95) ||
				!near(got.P99, tt.want.P99) || !near(got.Max, tt.want.Max) || !near(got.Mean, tt.want.Mean) ||
				!near(got.MedianLow, tt.want.MedianLow) || !near(got.MedianHigh, tt.want.MedianHigh) {
				t.Fatalf("Summarize = %s, want %s", g, w)
			}
			for i := range in {
				if in[i] != tt.xs[i] {
					t.Fatalf("Summarize reordered its input: %v", in)
				}
			}
		})
	}
	if s := Summarize([]float64{math.NaN()}); s.N != 0 || !math.IsNaN(s.Median) {
		t.Fatalf("Summarize of nothing finite = %+v, want N 0 and NaN median", s)
	}
}

func TestRatio(t *testing.T) {
	konst := func(v float64, n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = v
		}
		return xs
	}
	scaled := func(xs []float64, k float64) []float64 {
		out := make([]float64, len(xs))
		for i, x := range xs {
			out[i] = x * k
		}
		return out
	}
	tests := []struct {
		name            string
		base, x         []float64
		ratio           float64
		exactCI         bool // Low == High == ratio
		significant     bool // P < 0.05
		wantNaN         bool
		wantLow, wantHi float64 // bounds the interval must lie within (when not exact)
	}{
		{name: "constant halves", base: konst(10, 20), x: konst(5, 20), ratio: 0.5, exactCI: true, significant: true},
		{name: "doubled spread", base: seq(1, 40), x: scaled(seq(1, 40), 2), ratio: 2, significant: true, wantLow: 1.2, wantHi: 3.2},
		{name: "same distribution", base: seq(1, 30), x: seq(1, 30), ratio: 1, wantLow: 0.55, wantHi: 1.7},
		{name: "empty base", base: nil, x: seq(1, 3), wantNaN: true},
		{name: "zero base median", base: konst(0, 5), x: seq(1, 5), wantNaN: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Ratio(tt.base, tt.x)
			if tt.wantNaN {
				if !math.IsNaN(r.Ratio) || !math.IsNaN(r.Low) || !math.IsNaN(r.High) {
					t.Fatalf("Ratio = %+v, want NaN", r)
				}
				return
			}
			if !near(r.Ratio, tt.ratio) {
				t.Fatalf("Ratio = %v, want %v", r.Ratio, tt.ratio)
			}
			if r.Low > r.Ratio || r.High < r.Ratio {
				t.Fatalf("interval [%v, %v] does not hold the ratio %v", r.Low, r.High, r.Ratio)
			}
			if tt.exactCI && (r.Low != tt.ratio || r.High != tt.ratio) {
				t.Fatalf("interval [%v, %v], want exactly %v", r.Low, r.High, tt.ratio)
			}
			if !tt.exactCI && (r.Low < tt.wantLow || r.High > tt.wantHi || r.Low == r.High) {
				t.Fatalf("interval [%v, %v], want a non-empty one inside [%v, %v]", r.Low, r.High, tt.wantLow, tt.wantHi)
			}
			if (r.P < 0.05) != tt.significant {
				t.Fatalf("P = %v, want significant=%v", r.P, tt.significant)
			}
			if again := Ratio(tt.base, tt.x); again != r {
				t.Fatalf("Ratio is not deterministic: %+v then %+v", r, again)
			}
			s := r.Speedup()
			if !near(s.Ratio, 1/r.Ratio) || !near(s.Low, 1/r.High) || !near(s.High, 1/r.Low) {
				t.Fatalf("Speedup = %+v, not the inverse of %+v", s, r)
			}
		})
	}
}

func TestRatioString(t *testing.T) {
	tests := []struct {
		r    RatioCI
		want string
	}{
		{RatioCI{Ratio: 47.123, Low: 44.01, High: 51.24}, "47.1× [44×, 51.2×]"},
		{RatioCI{Ratio: 0.0212, Low: math.NaN(), High: math.NaN()}, "0.0212×"},
		{RatioCI{Ratio: math.NaN()}, "n/a"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestRatioSeedAndLevel(t *testing.T) {
	base, x := seq(1, 25), seq(3, 27)
	a := RatioWith(base, x, RatioOptions{Seed: 1})
	b := RatioWith(base, x, RatioOptions{Seed: 2})
	if a == b {
		t.Fatalf("seeds 1 and 2 gave the same bootstrap %+v; the seed is not used", a)
	}
	narrow := RatioWith(base, x, RatioOptions{Seed: 1, Confidence: 0.5})
	if !(narrow.Low >= a.Low && narrow.High <= a.High && narrow.High-narrow.Low < a.High-a.Low) {
		t.Fatalf("50%% interval [%v, %v] is not inside the 95%% one [%v, %v]", narrow.Low, narrow.High, a.Low, a.High)
	}
}

func TestThroughput(t *testing.T) {
	tests := []struct {
		name    string
		runs    []Run
		median  float64
		overall float64
		n       int
	}{
		{"three runs", []Run{{100, time.Second}, {300, time.Second}, {100, 2 * time.Second}}, 100, 125, 3},
		{"zero duration skipped", []Run{{100, time.Second}, {5, 0}}, 100, 100, 1},
		{"none", nil, math.NaN(), math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Throughput(tt.runs)
			if got.Runs != tt.n || !near(got.Median, tt.median) || !near(got.Overall, tt.overall) {
				t.Fatalf("Throughput = %+v, want runs %d median %v overall %v", got, tt.n, tt.median, tt.overall)
			}
		})
	}
}

func BenchmarkRatio(b *testing.B) {
	base, x := seq(1, 1000), seq(2, 1001)
	for b.Loop() {
		Ratio(base, x)
	}
}
