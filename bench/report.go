package bench

import (
	"encoding/json"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kuasar-go/kuasar/bench/internal/stats"
	"github.com/kuasar-go/kuasar/internal/version"
)

// SchemaVersion is the version of the JSON report's shape; it changes when a
// field changes meaning or goes away, so that tools reading old reports can
// tell.
const SchemaVersion = 1

// Report is everything one `kuasar bench` run measured, as written by --json:
// every sample, the machine it ran on, and the command that reproduces it.
type Report struct {
	Schema    int               `json:"schema"`
	Command   string            `json:"command"`
	Quick     bool              `json:"quick"`
	Started   time.Time         `json:"started"`
	Finished  time.Time         `json:"finished"`
	Machine   Machine           `json:"machine"`
	Scenarios []*ScenarioResult `json:"scenarios"`
	// Interrupted is set when the run was stopped before its end; the
	// scenarios listed are those that ran.
	Interrupted bool `json:"interrupted,omitempty"`
}

// Machine is what the figures were measured on: they mean nothing without
// it, and on a shared machine the load average says how far to trust them.
type Machine struct {
	CPUs          int        `json:"cpus"`
	CPUModel      string     `json:"cpu_model"`
	MemTotalBytes uint64     `json:"mem_total_bytes"`
	Kernel        string     `json:"kernel"`
	OS            string     `json:"os"`
	Arch          string     `json:"arch"`
	GoVersion     string     `json:"go_version"`
	Kuasar        string     `json:"kuasar"`
	LoadStart     [3]float64 `json:"load_average_start"`
	LoadEnd       [3]float64 `json:"load_average_end"`
}

// ScenarioResult is one scenario's figures.
type ScenarioResult struct {
	Name    string `json:"name"`
	Summary string `json:"summary"`
	// Command reproduces these figures alone.
	Command string `json:"command"`
	// Series are samples of one quantity each (latencies in seconds),
	// the scenario's own and its baselines', taken interleaved.
	Series []*Series `json:"series"`
	// Ratios compare a series with each baseline of the scenario.
	Ratios []Ratio `json:"ratios,omitempty"`
	// Curves are scaling curves: one quantity against a load parameter.
	Curves []*Curve `json:"curves,omitempty"`
	// Skipped names the arms that could not run, with why.
	Skipped []string `json:"skipped,omitempty"`
	// Error is set when the scenario failed; figures above it are from
	// what completed.
	Error string `json:"error,omitempty"`
	// Seconds is the scenario's wall-clock time.
	Seconds float64 `json:"seconds"`
}

// Series is the samples of one measured quantity.
type Series struct {
	Name string `json:"name"`
	// Unit is "s" for durations, else what the values count
	// ("tasks/s", "KiB/sandbox").
	Unit string `json:"unit"`
	// Baseline marks another runtime's figures, measured for comparison.
	Baseline bool      `json:"baseline,omitempty"`
	What     string    `json:"what"`
	Samples  []float64 `json:"samples"`
	Stats    Stats     `json:"stats"`
	// noRatio leaves the series out of the ratios (a part of a
	// breakdown, which no baseline measures).
	noRatio bool
	// vs names the baselines the series is compared with; empty means
	// every baseline of the scenario.
	vs []string
}

// Stats summarises a series: quantiles as bench/internal/stats computes
// them (see its documentation for the method).
type Stats struct {
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

func summarize(samples []float64) Stats {
	if len(samples) == 0 {
		return Stats{}
	}
	s := stats.Summarize(samples)
	return Stats{N: s.N, Min: s.Min, Median: s.Median, P95: s.P95, P99: s.P99, Max: s.Max, Mean: s.Mean}
}

// Ratio is how many times faster (or smaller) Series is than Baseline:
// the baseline's median over the series' median, with its 95% interval.
type Ratio struct {
	Series   string  `json:"series"`
	Baseline string  `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	Low      float64 `json:"low"`
	High     float64 `json:"high"`
	// Target is the ratio the project aims at (0: none).
	Target float64 `json:"target,omitempty"`
}

// Curve is a scaling curve: Y against X, a point per load level.
type Curve struct {
	Name   string  `json:"name"`
	XLabel string  `json:"x_label"`
	YLabel string  `json:"y_label"`
	Unit   string  `json:"unit"`
	Points []Point `json:"points"`
	// Target is a bound Y should stay within (0: none), for the table.
	Target float64 `json:"target,omitempty"`
	// TargetAbove is true when Y should be at least Target, else at most.
	TargetAbove bool `json:"target_above,omitempty"`
}

// Point is one load level of a curve; Low and High bound Y when known.
type Point struct {
	X    float64 `json:"x"`
	Y    float64 `json:"y"`
	Low  float64 `json:"low,omitempty"`
	High float64 `json:"high,omitempty"`
}

func (s *Series) add(v float64) { s.Samples = append(s.Samples, v) }

// finish computes the summaries of every series and the ratios.
func (r *ScenarioResult) finish(targets map[string]float64) {
	if r.Series == nil {
		r.Series = []*Series{} // [] rather than null in the JSON
	}
	var bases []*Series
	for _, s := range r.Series {
		if s.Samples == nil {
			s.Samples = []float64{}
		}
		s.Stats = summarize(s.Samples)
		if s.Baseline && len(s.Samples) > 0 {
			bases = append(bases, s)
		}
	}
	r.Ratios = nil
	for _, s := range r.Series {
		if s.Baseline || s.noRatio || len(s.Samples) == 0 || s.Unit != "s" {
			continue
		}
		for _, b := range bases {
			if b.Unit != s.Unit || (len(s.vs) > 0 && !slices.Contains(s.vs, b.Name)) {
				continue
			}
			ci := stats.Ratio(b.Samples, s.Samples).Speedup()
			r.Ratios = append(r.Ratios, Ratio{Series: s.Name, Baseline: b.Name, Ratio: ci.Ratio, Low: ci.Low, High: ci.High,
				Target: targets[s.Name+"/"+b.Name]})
		}
	}
}

// WriteJSON writes the report, indented, to w.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// currentMachine reads what the figures are measured on from /proc.
func currentMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", Kernel: "unknown", OS: runtime.GOOS, Arch: runtime.GOARCH,
		GoVersion: runtime.Version(), Kuasar: version.Version + " (" + version.Revision + ")", LoadStart: loadAverage()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseUint(f[1], 10, 64)
				m.MemTotalBytes = kib << 10
			}
		}
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages (zeros if unknown).
func loadAverage() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}
