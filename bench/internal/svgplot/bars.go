package svgplot

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Bar is one labelled value, such as RSS per idle sandbox for one runtime,
// with an optional interval (Low < High) drawn as an error whisker.
type Bar struct {
	Name             string
	Value, Low, High float64
}

// BarChart is a chart of labelled values: density per sandbox, ratios to a
// baseline, compile-cache times. Bars are vertical unless Horizontal, which
// suits long names; the value axis starts at 0.
type BarChart struct {
	Title, YLabel string
	Bars          []Bar
	// Unit scales and labels values as LineChart.YUnit does.
	Unit       string
	Horizontal bool
}

// Bars writes c to w as SVG. It fails with errdefs.ErrInvalidArgument when
// there is no bar or a value is not finite.
func Bars(w io.Writer, c BarChart) error {
	if len(c.Bars) == 0 {
		return invalid(c.Title, "no bars; give it at least one")
	}
	min, max := 0.0, 0.0
	longest := 0
	for _, b := range c.Bars {
		if !finite(b.Value) {
			return invalid(c.Title, "bar %q has the value %v; give finite values", b.Name, b.Value)
		}
		min, max = math.Min(min, b.Value), math.Max(max, b.Value)
		if whisker(b) {
			min, max = math.Min(min, b.Low), math.Max(max, b.High)
		}
		longest = int(math.Max(float64(longest), float64(len([]rune(b.Name)))))
	}
	var d doc
	names := make([]string, len(c.Bars))
	for i, b := range c.Bars {
		names[i] = b.Name
	}
	d.begin(c.Title, fmt.Sprintf("%s of %s.", c.YLabel, strings.Join(names, ", ")))
	n := float64(len(c.Bars))
	if c.Horizontal {
		left := math.Min(math.Max(float64(longest)*charWidth+24, marginLeft), Width/3)
		a := area{left, marginTop, Width - 110, Height - marginBottom}
		v := linearAxis(min, max, true, c.Unit, a.x0, a.x1)
		cat := &axis{lo: 0, hi: n, p0: a.y0, p1: a.y1}
		d.frame(a, v, cat, c.YLabel, "")
		slot := (a.y1 - a.y0) / n
		for i, b := range c.Bars {
			mid := a.y0 + slot*(float64(i)+0.5)
			th := math.Min(slot*0.6, 48)
			x0, x1 := v.pos(0), v.pos(b.Value)
			d.f(`<rect class="bar" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s</title></rect>`+"\n",
				num(math.Min(x0, x1)), num(mid-th/2), num(math.Abs(x1-x0)), num(th), colour(i), esc(b.Name+": "+formatValue(b.Value, c.Unit)))
			end := math.Max(x0, x1)
			if whisker(b) {
				lo, hi := v.pos(b.Low), v.pos(b.High)
				d.line(lo, mid, hi, mid, `class="whisker" stroke="#222222" stroke-width="1.5"`)
				d.line(lo, mid-6, lo, mid+6, `stroke="#222222" stroke-width="1.5"`)
				d.line(hi, mid-6, hi, mid+6, `stroke="#222222" stroke-width="1.5"`)
				end = math.Max(end, hi)
			}
			d.text(a.x0-8, mid+4, "end", ` class="name"`, clip(b.Name, a.x0-16))
			d.text(end+6, mid+4, "start", ` class="value" font-weight="bold"`, formatValue(b.Value, c.Unit))
		}
		return d.end(w)
	}
	a := area{marginLeft, marginTop, Width - 30, Height - marginBottom}
	slot := (a.x1 - a.x0) / n
	rotate := float64(longest)*charWidth > slot-6
	if rotate {
		a.y1 = Height - math.Min(float64(longest)*charWidth*0.6+30, Height/3)
	}
	v := linearAxis(min, max, true, c.Unit, a.y1, a.y0)
	cat := &axis{lo: 0, hi: n, p0: a.x0, p1: a.x1}
	d.frame(a, cat, v, "", c.YLabel)
	for i, b := range c.Bars {
		mid := a.x0 + slot*(float64(i)+0.5)
		bw := math.Min(slot*0.6, 80)
		y0, y1 := v.pos(0), v.pos(b.Value)
		d.f(`<rect class="bar" x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s</title></rect>`+"\n",
			num(mid-bw/2), num(math.Min(y0, y1)), num(bw), num(math.Abs(y1-y0)), colour(i), esc(b.Name+": "+formatValue(b.Value, c.Unit)))
		top := math.Min(y0, y1)
		if whisker(b) {
			lo, hi := v.pos(b.Low), v.pos(b.High)
			d.line(mid, lo, mid, hi, `class="whisker" stroke="#222222" stroke-width="1.5"`)
			d.line(mid-6, lo, mid+6, lo, `stroke="#222222" stroke-width="1.5"`)
			d.line(mid-6, hi, mid+6, hi, `stroke="#222222" stroke-width="1.5"`)
			top = math.Min(top, hi)
		}
		d.text(mid, top-6, "middle", ` class="value" font-weight="bold"`, formatValue(b.Value, c.Unit))
		if rotate {
			d.f(`<text class="name" x="0" y="0" text-anchor="end" transform="translate(%s %s) rotate(-35)">%s</text>`+"\n", num(mid+4), num(a.y1+16), esc(clip(b.Name, (Height/3-30)/0.6)))
		} else {
			d.text(mid, a.y1+20, "middle", ` class="name"`, b.Name)
		}
	}
	return d.end(w)
}

// whisker reports whether b carries an interval.
func whisker(b Bar) bool { return finite(b.Low) && finite(b.High) && b.Low < b.High }
