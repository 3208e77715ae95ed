package svgplot

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/kuasar-go/kuasar/bench/internal/stats"
)

// Samples is one named series of measurements, such as one runtime's start
// latencies. Values are in Unit, as LineChart.XUnit describes ("s" for
// seconds, "B" or "KiB" for bytes, or any other unit, printed as given).
type Samples struct {
	Name   string
	Values []float64
	Unit   string
}

// CDFChart is a chart of empirical cumulative distributions, one line per
// series: for a latency x, the fraction of samples at or below x. A line
// further left is faster; a long tail shows as a line that bends late.
type CDFChart struct {
	Title, XLabel string
	// LogX puts the x axis on a log scale (values <= 0 are then left out),
	// which keeps series orders of magnitude apart readable.
	LogX   bool
	Series []Samples
}

// maxSteps is the largest sample drawn as an exact step function; larger
// ones are drawn through this many evenly spaced quantiles, which keeps the
// file small and looks the same at this size.
const maxSteps = 400

// CDF writes c to w as SVG. Non-finite values are ignored. It fails with
// errdefs.ErrInvalidArgument when no series has a value to plot or the
// series disagree on their unit.
func CDF(w io.Writer, c CDFChart) error {
	unit := ""
	var all []float64
	sorted := make([][]float64, len(c.Series))
	for i, s := range c.Series {
		if i > 0 && s.Unit != c.Series[0].Unit {
			return invalid(c.Title, "series %q is in %q but %q is in %q; convert them to one unit", s.Name, s.Unit, c.Series[0].Name, c.Series[0].Unit)
		}
		unit = s.Unit
		for _, v := range s.Values {
			if finite(v) && (!c.LogX || v > 0) {
				sorted[i] = append(sorted[i], v)
			}
		}
		slices.Sort(sorted[i])
		all = append(all, sorted[i]...)
	}
	if len(all) == 0 {
		if c.LogX {
			return invalid(c.Title, "no series has a finite value above 0 for a log axis; give each series samples")
		}
		return invalid(c.Title, "no series has a finite value; give each series samples")
	}
	min, max := slices.Min(all), slices.Max(all)
	a := area{marginLeft, marginTop, Width - legendWidth, Height - marginBottom}
	var x *axis
	if c.LogX {
		x = logAxis(min, max, unit, a.x0, a.x1)
	} else {
		x = linearAxis(min, max, false, unit, a.x0, a.x1)
	}
	y := linearAxis(0, 1, true, "", a.y1, a.y0)
	for i := range y.ticks {
		y.ticks[i].label = fmt.Sprintf("%.0f%%", y.ticks[i].v*100)
	}

	var d doc
	d.begin(c.Title, "Empirical cumulative distribution of "+seriesNames(c.Series)+".")
	d.frame(a, x, y, c.XLabel, "fraction of samples at or below")
	// p50 and p99 guides.
	for _, g := range []struct {
		p     float64
		label string
	}{{0.5, "p50"}, {0.99, "p99"}} {
		py := y.pos(g.p)
		d.line(a.x0, py, a.x1, py, `stroke="#999999" stroke-dasharray="3 3"`)
		d.text(a.x1-4, py-4, "end", ` font-size="11" fill="#777777"`, g.label)
	}
	var entries []legendEntry
	for i, s := range c.Series {
		xs := sorted[i]
		e := legendEntry{name: s.Name, colour: colour(i), dash: dash(i), marker: -1}
		if len(xs) == 0 {
			e.detail = "no samples"
			entries = append(entries, e)
			continue
		}
		// The same quantile method as the harness's table.
		e.detail = fmt.Sprintf("p50 %s · p99 %s", formatValue(stats.Quantile(xs, 0.5), unit), formatValue(stats.Quantile(xs, 0.99), unit))
		entries = append(entries, e)
		var p strings.Builder
		n := float64(len(xs))
		if len(xs) <= maxSteps {
			fmt.Fprintf(&p, "M%s %s", num(x.pos(xs[0])), num(y.pos(0)))
			for j, v := range xs {
				if j > 0 {
					fmt.Fprintf(&p, "H%s", num(x.pos(v)))
				}
				fmt.Fprintf(&p, "V%s", num(y.pos(float64(j+1)/n)))
			}
		} else {
			for j := 0; j <= maxSteps; j++ {
				q := float64(j) / maxSteps
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&p, "%s%s %s", cmd, num(x.pos(quantile(xs, q))), num(y.pos(q)))
			}
		}
		d.f(`<path class="series" d="%s" fill="none" stroke="%s" stroke-width="2"%s stroke-linejoin="round"><title>%s</title></path>`+"\n", p.String(), e.colour, dashAttr(e.dash), esc(fmt.Sprintf("%s: %d samples", s.Name, len(xs))))
	}
	d.legend(a, entries)
	return d.end(w)
}

// quantile is the p-quantile of sorted xs by linear interpolation between
// order statistics (for drawing; bench/internal/stats has the reported
// figures).
func quantile(xs []float64, p float64) float64 {
	h := p * float64(len(xs)-1)
	k := int(math.Floor(h))
	if k >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	return xs[k] + (h-float64(k))*(xs[k+1]-xs[k])
}

func seriesNames(ss []Samples) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}
