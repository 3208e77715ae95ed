package svgplot

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Point is one measurement of a scaling curve: Y at X, and when YLow < YHigh
// an interval around Y (drawn as a shaded band), such as a confidence
// interval or the p50-p99 spread.
type Point struct {
	X, Y, YLow, YHigh float64
}

// Line is one named scaling curve.
type Line struct {
	Name   string
	Points []Point
}

// LineChart is a chart of scaling curves: p50/p99 start latency against
// concurrency, RSS against live sandboxes, throughput against concurrency.
// Each series gets a colour, a marker shape at its points (up to 60 points)
// and its band when its points carry one.
type LineChart struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Line
	// XUnit and YUnit scale and label the tick values: "s" (seconds, shown
	// as ns to s), "B", "KiB", "MiB", "GiB" (bytes in that unit, shown as
	// B to TiB by powers of 1024), "" (a plain count, shown with k and M),
	// or any other unit, printed after the number (with k and M).
	XUnit, YUnit string
}

// maxMarkers is the most points per series drawn with markers.
const maxMarkers = 60

// Lines writes c to w as SVG. Points with a non-finite coordinate, or a
// coordinate <= 0 on a log axis, are left out. It fails with
// errdefs.ErrInvalidArgument when no point is left to plot.
func Lines(w io.Writer, c LineChart) error {
	ok := func(v float64, log bool) bool { return finite(v) && (!log || v > 0) }
	hasBand := func(p Point) bool { return ok(p.YLow, c.LogY) && ok(p.YHigh, c.LogY) && p.YLow < p.YHigh }
	series := make([][]Point, len(c.Series))
	var xs, ys []float64
	for i, l := range c.Series {
		for _, p := range l.Points {
			if !ok(p.X, c.LogX) || !ok(p.Y, c.LogY) {
				continue
			}
			series[i] = append(series[i], p)
			xs = append(xs, p.X)
			ys = append(ys, p.Y)
			if hasBand(p) {
				ys = append(ys, p.YLow, p.YHigh)
			}
		}
		slices.SortStableFunc(series[i], func(a, b Point) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
	}
	if len(xs) == 0 {
		return invalid(c.Title, "no series has a point with finite coordinates (above 0 on a log axis); give each series points")
	}
	a := area{marginLeft, marginTop, Width - legendWidth, Height - marginBottom}
	var x, y *axis
	if c.LogX {
		x = logAxis(slices.Min(xs), slices.Max(xs), c.XUnit, a.x0, a.x1)
	} else {
		x = linearAxis(slices.Min(xs), slices.Max(xs), false, c.XUnit, a.x0, a.x1)
	}
	if c.LogY {
		y = logAxis(slices.Min(ys), slices.Max(ys), c.YUnit, a.y1, a.y0)
	} else {
		y = linearAxis(slices.Min(ys), slices.Max(ys), true, c.YUnit, a.y1, a.y0)
	}

	var d doc
	names := make([]string, len(c.Series))
	for i, l := range c.Series {
		names[i] = l.Name
	}
	d.begin(c.Title, fmt.Sprintf("%s against %s for %s.", c.YLabel, c.XLabel, strings.Join(names, ", ")))
	d.frame(a, x, y, c.XLabel, c.YLabel)
	var entries []legendEntry
	for i, l := range c.Series {
		pts := series[i]
		e := legendEntry{name: l.Name, colour: colour(i), dash: dash(i), marker: -1}
		if len(pts) <= maxMarkers {
			e.marker = i
		}
		if len(pts) == 0 {
			e.detail = "no points"
		}
		entries = append(entries, e)
		if len(pts) == 0 {
			continue
		}
		// The band: upper edge left to right, lower edge back.
		var band []Point
		for _, p := range pts {
			if hasBand(p) {
				band = append(band, p)
			}
		}
		if len(band) > 1 {
			var b strings.Builder
			for j, p := range band {
				cmd := "L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&b, "%s%s %s", cmd, num(x.pos(p.X)), num(y.pos(p.YHigh)))
			}
			for j := len(band) - 1; j >= 0; j-- {
				fmt.Fprintf(&b, "L%s %s", num(x.pos(band[j].X)), num(y.pos(band[j].YLow)))
			}
			d.f(`<path class="band" d="%sZ" fill="%s" fill-opacity="0.18" stroke="none"/>`+"\n", b.String(), e.colour)
		} else if len(band) == 1 {
			p := band[0]
			px := x.pos(p.X)
			d.line(px, y.pos(p.YLow), px, y.pos(p.YHigh), fmt.Sprintf(`class="band" stroke="%s" stroke-width="2" stroke-opacity="0.4"`, e.colour))
		}
		var p strings.Builder
		for j, pt := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&p, "%s%s %s", cmd, num(x.pos(pt.X)), num(y.pos(pt.Y)))
		}
		d.f(`<path class="series" d="%s" fill="none" stroke="%s" stroke-width="2"%s stroke-linejoin="round"><title>%s</title></path>`+"\n", p.String(), e.colour, dashAttr(e.dash), esc(l.Name))
		if e.marker >= 0 {
			d.raw(`<g class="markers">` + "\n")
			for _, pt := range pts {
				d.marker(e.marker, x.pos(pt.X), y.pos(pt.Y), e.colour)
			}
			d.raw("</g>\n")
		}
	}
	d.legend(a, entries)
	return d.end(w)
}
