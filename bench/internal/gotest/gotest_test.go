package gotest

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	input := `goos: linux
goarch: amd64
pkg: github.com/kuasar-go/kuasar/wasm/wazero
BenchmarkRun-2   	   10000	    110000 ns/op	    2048 B/op	      20 allocs/op
BenchmarkRun-2   	   10000	    130000 ns/op	    2048 B/op	      20 allocs/op
BenchmarkRun-2   	   10000	    120000 ns/op	    2048 B/op	      20 allocs/op
BenchmarkStart-2 	      20	   5000000 ns/op	         1.5 p50-ms
PASS
ok  	github.com/kuasar-go/kuasar/wasm/wazero	3.1s
`
	got, err := Parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	want := []Metric{
		{"Run", "sec/op", []float64{110e-6, 130e-6, 120e-6}},
		{"Run", "B/op", []float64{2048, 2048, 2048}},
		{"Run", "allocs/op", []float64{20, 20, 20}},
		{"Start", "sec/op", []float64{5e-3}},
		{"Start", "p50-ms", []float64{1.5}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d metrics, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || g.Unit != w.Unit || !slices.EqualFunc(g.Values, w.Values, close) {
			t.Errorf("metric %d = %+v, want %+v", i, g, w)
		}
	}
}

func close(a, b float64) bool { return math.Abs(a-b) <= math.Abs(b)*1e-9 }

func TestParseRejoinsResultsSplitByLogs(t *testing.T) {
	input := "BenchmarkBoot-2   \ttime=\"x\" level=info msg=\"vm: started\"\n" +
		"time=\"y\" level=info msg=\"vm: started\"\n" +
		"       3\t1848769838 ns/op\t      1418 agent-ready-ms\n" +
		"BenchmarkOther-2 \t 3\t 1000 ns/op\n"
	ms, err := Parse(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range ms {
		got[m.Name+" "+m.Unit] = m.Values[0]
	}
	want := map[string]float64{"Boot sec/op": 1.848769838, "Boot agent-ready-ms": 1418, "Other sec/op": 1e-6}
	for k, v := range want {
		if g, ok := got[k]; !ok || !close(g, v) {
			t.Errorf("%s = %v (present %v), want %v; metrics %+v", k, g, ok, v, ms)
		}
	}
}
