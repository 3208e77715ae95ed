package svgplot

import (
	"bytes"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.svg from the current output")

// latencies returns n deterministic log-normal samples around median
// seconds, with a tail.
func latencies(seed uint64, n int, median, sigma float64) []float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = median * math.Exp(sigma*r.NormFloat64())
	}
	return xs
}

// Charts the golden files hold: one per kind and option a reader would
// notice breaking.
func goldenCDF() CDFChart {
	return CDFChart{
		Title:  "Start to exit: Wasm over the sandboxer API vs runc <busybox echo>",
		XLabel: "latency",
		LogX:   true,
		Series: []Samples{
			{Name: "kuasar wasm (sandboxer API)", Values: latencies(1, 200, 0.004, 0.25), Unit: "s"},
			{Name: "wazero CLI, process per task", Values: latencies(2, 60, 0.030, 0.2), Unit: "s"},
			{Name: "runc run", Values: latencies(3, 1000, 0.150, 0.15), Unit: "s"},
		},
	}
}

func goldenLines() LineChart {
	conc := []float64{1, 2, 8, 32, 128}
	var p50, p99 []Point
	for i, c := range conc {
		m := 0.004 * (1 + c/16)
		p50 = append(p50, Point{X: c, Y: m, YLow: m * 0.9, YHigh: m * 1.1})
		p99 = append(p99, Point{X: c, Y: m * (2 + float64(i)/2)})
	}
	return LineChart{
		Title: "Start latency against concurrency", XLabel: "concurrent starts", YLabel: "start to exit",
		LogX: true, LogY: true, XUnit: "", YUnit: "s",
		Series: []Line{{Name: "p50 (95% interval)", Points: p50}, {Name: "p99", Points: p99}},
	}
}

func goldenRSS() LineChart {
	var pts []Point
	for _, n := range []float64{1, 10, 100, 1000, 10000} {
		pts = append(pts, Point{X: n, Y: 30<<20 + n*96*1024})
	}
	return LineChart{
		Title: "Sandboxer RSS against live Wasm sandboxes", XLabel: "live sandboxes", YLabel: "RSS",
		LogX: true, YUnit: "B", Series: []Line{{Name: "kuasar-sandboxer", Points: pts}},
	}
}

func goldenBars() BarChart {
	return BarChart{
		Title: "RSS per idle sandbox", YLabel: "RSS per sandbox", Unit: "B",
		Bars: []Bar{
			{Name: "wasm", Value: 96 * 1024, Low: 90 * 1024, High: 101 * 1024},
			{Name: "vm (QEMU TCG)", Value: 180 << 20, Low: 170 << 20, High: 200 << 20},
			{Name: "runc", Value: 2 << 20},
		},
	}
}

func goldenBarsH() BarChart {
	return BarChart{
		Title: "Speed-up over runc run (median ratio, 95% interval)", YLabel: "times faster", Unit: "×", Horizontal: true,
		Bars: []Bar{
			{Name: "kuasar wasm, sandboxer API", Value: 37.5, Low: 35, High: 40},
			{Name: "kuasar wasm through CRI", Value: 6.2, Low: 5.9, High: 6.6},
			{Name: "wazero CLI & fresh process", Value: 5, Low: 4.5, High: 5.2},
		},
	}
}

func TestGolden(t *testing.T) {
	tests := []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"cdf.svg", func(b *bytes.Buffer) error { return CDF(b, goldenCDF()) }},
		{"lines.svg", func(b *bytes.Buffer) error { return Lines(b, goldenLines()) }},
		{"rss.svg", func(b *bytes.Buffer) error { return Lines(b, goldenRSS()) }},
		{"bars.svg", func(b *bytes.Buffer) error { return Bars(b, goldenBars()) }},
		{"bars-horizontal.svg", func(b *bytes.Buffer) error { return Bars(b, goldenBarsH()) }},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var got bytes.Buffer
			if err := tt.write(&got); err != nil {
				t.Fatal(err)
			}
			var again bytes.Buffer
			if err := tt.write(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), again.Bytes()) {
				t.Fatal("two renderings of the same chart differ")
			}
			if got.Len() > 30<<10 {
				t.Fatalf("%s is %d bytes; keep golden files under 30 KiB", tt.file, got.Len())
			}
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("%s differs from the golden file; look at both, and if the change is intended run go test -run TestGolden -update", tt.file)
			}
		})
	}
}
