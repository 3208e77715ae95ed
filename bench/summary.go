package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"

	"golang.org/x/perf/benchfmt"
	"golang.org/x/perf/benchmath"
)

// procsSuffix is the -GOMAXPROCS suffix go test appends to benchmark names.
var procsSuffix = regexp.MustCompile(`-\d+$`)

// row is one benchmark metric summarised over its runs.
type row struct {
	name    string
	unit    string
	summary benchmath.Summary
	n       int
}

// summarize reads `go test -bench` output and returns, for every benchmark
// and unit, the median and its 95% confidence interval, in the order the
// benchmarks first appeared.
func summarize(r io.Reader) ([]row, error) {
	type key struct{ name, unit string }
	values := map[key][]float64{}
	var order []key
	reader := benchfmt.NewReader(rejoinResults(r), "bench")
	for reader.Scan() {
		res, ok := reader.Result().(*benchfmt.Result)
		if !ok {
			continue // a syntax error or unit line: go test prints other text too
		}
		name := procsSuffix.ReplaceAllString(string(res.Name.Full()), "")
		for _, v := range res.Values {
			k := key{name, v.Unit}
			if _, seen := values[k]; !seen {
				order = append(order, k)
			}
			values[k] = append(values[k], v.Value)
		}
	}
	if err := reader.Err(); err != nil {
		return nil, err
	}
	rows := make([]row, 0, len(order))
	for _, k := range order {
		vals := values[k]
		sample := benchmath.NewSample(vals, &benchmath.DefaultThresholds)
		rows = append(rows, row{name: k.name, unit: k.unit, summary: benchmath.AssumeNothing.Summary(sample, 0.95), n: len(vals)})
	}
	return rows, nil
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

// writeTable prints rows as a Markdown table, one benchmark per group of
// rows, its time unit first.
func writeTable(w io.Writer, rows []row) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No benchmark results.")
		return
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].name != rows[j].name {
			return false // keep the order benchmarks ran in
		}
		return unitRank(rows[i].unit) < unitRank(rows[j].unit)
	})
	fmt.Fprintln(w, "| benchmark | metric | median | 95% CI | runs |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range rows {
		ci := r.summary.PctRangeString()
		if math.IsInf(r.summary.Lo, 0) || math.IsInf(r.summary.Hi, 0) {
			ci = "n/a (needs 6+ runs)"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d |\n", r.name, r.unit, formatValue(r.summary.Center, r.unit), ci, r.n)
	}
	fmt.Fprintln(w)
}

func unitRank(unit string) int {
	switch unit {
	case "sec/op":
		return 0
	case "B/op", "allocs/op":
		return 2
	}
	return 1
}

// formatValue prints durations in the unit a reader expects (µs, ms, s).
func formatValue(v float64, unit string) string {
	if unit == "sec/op" {
		switch {
		case v < 1e-3:
			return fmt.Sprintf("%.1f µs", v*1e6)
		case v < 1:
			return fmt.Sprintf("%.2f ms", v*1e3)
		default:
			return fmt.Sprintf("%.2f s", v)
		}
	}
	return fmt.Sprintf("%.4g", v)
}
