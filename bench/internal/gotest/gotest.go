// Package gotest reads the output of `go test -bench` (or of a compiled test
// binary run with -test.bench) into every sample of every metric, so that the
// harness can run the project's existing benchmarks and treat their figures
// like those it measures itself.
package gotest

import (
	"bufio"
	"bytes"
	"io"
	"regexp"

	"golang.org/x/perf/benchfmt"
)

// procsSuffix is the -GOMAXPROCS suffix go test appends to benchmark names.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// Metric is one benchmark's one unit with the value of every run, in the
// order they were printed. Units are benchfmt's: "sec/op" for ns/op.
type Metric struct {
	Name   string
	Unit   string
	Values []float64
}

// Parse reads `go test -bench` output and returns every benchmark and unit
// with its values, in the order the benchmarks first appeared. Lines that are
// not results (logs, PASS, ok) are skipped.
func Parse(r io.Reader) ([]Metric, error) {
	type key struct{ name, unit string }
	index := map[key]int{}
	var out []Metric
	reader := benchfmt.NewReader(rejoinResults(r), "bench")
	for reader.Scan() {
		res, ok := reader.Result().(*benchfmt.Result)
		if !ok {
			continue // a syntax error or unit line: go test prints other text too
		}
		name := procsSuffix.ReplaceAllString(string(res.Name.Full()), "")
		for _, v := range res.Values {
			k := key{name, v.Unit}
			i, seen := index[k]
			if !seen {
				i = len(out)
				index[k] = i
				out = append(out, Metric{Name: name, Unit: v.Unit})
			}
			out[i].Values = append(out[i].Values, v.Value)
		}
	}
	return out, reader.Err()
}

// rejoinResults undoes what a log line written during a benchmark does to
// go test's output: the benchmark's name is printed before it runs, so a log
// line lands after the name and the figures follow on a line of their own.
// Such figure lines get their benchmark's name back; log lines are dropped.
func rejoinResults(r io.Reader) io.Reader {
	var out bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	pending := ""
	for sc.Scan() {
		line := sc.Text()
		if m := nameThenText.FindStringSubmatch(line); m != nil {
			pending = m[1]
			continue
		}
		if pending != "" && figuresOnly.MatchString(line) {
			line = pending + line
			pending = ""
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	return &out
}

var (
	// nameThenText is a benchmark name followed by something that is not
	// its iteration count (a log line).
	nameThenText = regexp.MustCompile(`^(Benchmark\S+\s+)[^\s0-9]`)
	// figuresOnly is a result line without its name.
	figuresOnly = regexp.MustCompile(`^\s+\d+\s+[0-9.e+]+ ns/op`)
)
