package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
)

// writeTable prints the report for a person: per scenario, each series'
// median, p95 and p99, each ratio to a baseline with its interval and
// target, each curve's points, and what was skipped or failed.
func writeTable(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "kuasar bench: %d CPUs (%s), kernel %s, %s; load average %.2f at the start, %.2f at the end\n",
		m.CPUs, m.CPUModel, m.Kernel, m.Kuasar, m.LoadStart[0], m.LoadEnd[0])
	for _, res := range rep.Scenarios {
		fmt.Fprintf(w, "\n%s: %s\n  reproduce: %s\n", res.Name, res.Summary, res.Command)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		if len(res.Series) > 0 {
			fmt.Fprintln(tw, "  series\tn\tmedian\tp95\tp99\t")
		}
		for _, s := range res.Series {
			name := s.Name
			if s.Baseline {
				name += " (baseline)"
			}
			if s.Stats.N == 0 {
				fmt.Fprintf(tw, "  %s\t0\t-\t-\t-\t\n", name)
				continue
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t\n", name, s.Stats.N, formatValue(s.Stats.Median, s.Unit),
				formatValue(s.Stats.P95, s.Unit), formatValue(s.Stats.P99, s.Unit))
		}
		tw.Flush()
		for _, ra := range res.Ratios {
			fmt.Fprintf(w, "  %s vs %s: %s%s\n", ra.Series, ra.Baseline, describeRatio(ra), targetNote(ra.Ratio, ra.Target, true))
		}
		for _, c := range res.Curves {
			var pts []string
			for _, p := range c.Points {
				pts = append(pts, fmt.Sprintf("%g: %s", p.X, formatValue(p.Y, c.Unit)))
			}
			last := math.NaN()
			if len(c.Points) > 0 {
				last = c.Points[len(c.Points)-1].Y
			}
			fmt.Fprintf(w, "  %s by %s: %s%s\n", c.Name, c.XLabel, strings.Join(pts, ", "), targetNote(last, c.Target, c.TargetAbove))
		}
		for _, s := range res.Skipped {
			fmt.Fprintf(w, "  skipped: %s\n", s)
		}
		if res.Error != "" {
			fmt.Fprintf(w, "  FAILED: %s\n", res.Error)
		}
	}
	if rep.Interrupted {
		fmt.Fprintln(w, "\nInterrupted: the figures stop at the scenario that was running.")
	}
}

// targetNote says whether v meets target (at least it when above, else at
// most); empty when there is no target.
func targetNote(v, target float64, above bool) string {
	if target == 0 {
		return ""
	}
	met := v <= target
	op := "≤"
	if above {
		met, op = v >= target, "≥"
	}
	verdict := "met"
	if !met {
		verdict = "NOT met"
	}
	return fmt.Sprintf("; target %s%g: %s", op, target, verdict)
}

// describeRatio says how many times faster (ratio >= 1) or slower the
// series is than the baseline, with the interval.
func describeRatio(ra Ratio) string {
	if ra.Ratio >= 1 || math.IsNaN(ra.Ratio) {
		return fmt.Sprintf("%s faster (95%% interval %s to %s)", formatRatio(ra.Ratio), formatRatio(ra.Low), formatRatio(ra.High))
	}
	return fmt.Sprintf("%s slower (95%% interval %s to %s)", formatRatio(1/ra.Ratio), formatRatio(1/ra.High), formatRatio(1/ra.Low))
}

func formatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// formatValue prints a value in the unit a reader expects: durations (unit
// "s") in µs, ms or s; other units as a number with the unit.
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	if unit == "s" {
		switch a := math.Abs(v); {
		case a < 1e-3:
			return fmt.Sprintf("%.1f µs", v*1e6)
		case a < 1:
			return fmt.Sprintf("%.2f ms", v*1e3)
		default:
			return fmt.Sprintf("%.2f s", v)
		}
	}
	switch a := math.Abs(v); {
	case a >= 100 || a == math.Trunc(a):
		return fmt.Sprintf("%.0f %s", v, unit)
	case a >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.3g %s", v, unit)
	}
}
