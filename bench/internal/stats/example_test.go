package stats_test

import (
	"fmt"
	"time"

	"github.com/kuasar-go/kuasar/bench/internal/stats"
)

func ExampleSummarize() {
	// Start latencies in seconds.
	s := stats.Summarize([]float64{0.0012, 0.0011, 0.0013, 0.0010, 0.0040, 0.0012, 0.0011})
	fmt.Printf("n=%d median=%.4f p95=%.4f max=%.4f\n", s.N, s.Median, s.P95, s.Max)
	// Output: n=7 median=0.0012 p95=0.0040 max=0.0040
}

func ExampleRatio() {
	runc := []float64{0.200, 0.210, 0.190, 0.205, 0.195, 0.220, 0.199, 0.201}
	wasm := []float64{0.004, 0.005, 0.004, 0.0045, 0.0042, 0.0041, 0.0043, 0.0044}
	r := stats.Ratio(runc, wasm)
	fmt.Printf("wasm/runc = %.4f\n", r.Ratio)
	s := r.Speedup()
	fmt.Printf("wasm is %.0fx faster (95%% interval %.0fx to %.0fx), p<0.05: %v\n", s.Ratio, s.Low, s.High, s.P < 0.05)
	// Output:
	// wasm/runc = 0.0212
	// wasm is 47x faster (95% interval 44x to 51x), p<0.05: true
}

func ExampleThroughput() {
	t := stats.Throughput([]stats.Run{{Ops: 2000, Elapsed: time.Second}, {Ops: 2100, Elapsed: time.Second}, {Ops: 1900, Elapsed: time.Second}})
	fmt.Printf("median %.0f tasks/s over %d runs, overall %.0f tasks/s\n", t.Median, t.Runs, t.Overall)
	// Output: median 2000 tasks/s over 3 runs, overall 2000 tasks/s
}
