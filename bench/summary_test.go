package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
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
	rows, err := summarize(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, unit string
		center     float64
		n          int
	}{
		{"Run", "sec/op", 120e-6, 3},
		{"Run", "B/op", 2048, 3},
		{"Run", "allocs/op", 20, 3},
		{"Start", "sec/op", 5e-3, 1},
		{"Start", "p50-ms", 1.5, 1},
	}
	if len(rows) != len(tests) {
		t.Fatalf("got %d rows, want %d: %+v", len(rows), len(tests), rows)
	}
	for i, tt := range tests {
		r := rows[i]
		if r.name != tt.name || r.unit != tt.unit || r.n != tt.n {
			t.Errorf("row %d = %s %s n=%d, want %s %s n=%d", i, r.name, r.unit, r.n, tt.name, tt.unit, tt.n)
		}
		if diff := r.summary.Center - tt.center; diff > tt.center*1e-9 || diff < -tt.center*1e-9 {
			t.Errorf("row %d (%s %s) median = %g, want %g", i, r.name, r.unit, r.summary.Center, tt.center)
		}
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		unit string
		want string
	}{
		{110e-6, "sec/op", "110.0 µs"},
		{2.5e-3, "sec/op", "2.50 ms"},
		{2.5, "sec/op", "2.50 s"},
		{43008, "B/op", "4.301e+04"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.v, tt.unit); got != tt.want {
			t.Errorf("formatValue(%g, %q) = %q, want %q", tt.v, tt.unit, got, tt.want)
		}
	}
}

func TestWriteTableMarkdown(t *testing.T) {
	rows, err := summarize(strings.NewReader("BenchmarkX-2 100 1000 ns/op\n"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	writeTable(&buf, rows)
	if !strings.Contains(buf.String(), "| X | sec/op | 1.0 µs |") {
		t.Errorf("table missing the row for X:\n%s", buf.String())
	}
}

func TestSummarizeRejoinsResultsSplitByLogs(t *testing.T) {
	input := "BenchmarkBoot-2   \ttime=\"x\" level=info msg=\"vm: started\"\n" +
		"time=\"y\" level=info msg=\"vm: started\"\n" +
		"       3\t1848769838 ns/op\t      1418 agent-ready-ms\n" +
		"BenchmarkOther-2 \t 3\t 1000 ns/op\n"
	rows, err := summarize(strings.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, r := range rows {
		got[r.name+" "+r.unit] = r.summary.Center
	}
	want := map[string]float64{"Boot sec/op": 1.848769838, "Boot agent-ready-ms": 1418, "Other sec/op": 1e-6}
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > v*1e-9 {
			t.Errorf("%s = %v (present %v), want %v; rows %+v", k, g, ok, v, rows)
		}
	}
}
