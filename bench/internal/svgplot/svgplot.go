// Package svgplot writes the `kuasar bench` charts as standalone SVG files:
// latency CDFs (CDF), scaling curves (Lines) and summary bars (Bars).
//
// It is a small hand-written writer rather than gonum.org/v1/plot: that
// library would add about 8 MiB and eight modules to the kuasar CLI for three
// chart kinds (see RATIONALE.md, "Benchmark statistics and plots"). The
// charts have a fixed size (Width × Height), 1-2-5 tick steps, units scaled
// per axis (ns to s for "s"; B to TiB by powers of 1024 for "B", "KiB",
// "MiB", "GiB"; k, M, G otherwise), a palette safe for the common
// colour-vision deficiencies (Okabe and Ito's) with a marker shape or dash
// pattern per series as a second cue, and escaped text. Output depends only
// on the input: the same chart gives the same bytes.
package svgplot

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// Width and Height are every chart's size in SVG user units (pixels).
const (
	Width  = 860
	Height = 500
)

// Layout of the plot area inside the chart.
const (
	marginLeft   = 90
	marginTop    = 56
	marginBottom = 70
	legendWidth  = 250
	fontSize     = 13
	charWidth    = 0.6 * fontSize // estimate of an average glyph's advance
)

// Palette is the series colours in order: Okabe and Ito's colour-blind-safe
// set, darkest first, without its yellow (too faint on white).
var Palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

// dashes is the second cue after colour once the palette repeats.
var dashes = []string{"", "6 3", "2 3", "8 3 2 3"}

func colour(i int) string { return Palette[i%len(Palette)] }
func dash(i int) string   { return dashes[(i/len(Palette))%len(dashes)] }

// invalid wraps errdefs.ErrInvalidArgument with a message naming the chart.
func invalid(title, format string, args ...any) error {
	return fmt.Errorf("svgplot: chart %q: %s: %w", title, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// doc accumulates one SVG document.
type doc struct{ b bytes.Buffer }

// num formats a coordinate with at most one decimal, never "-0".
func num(v float64) string {
	v = math.Round(v*10) / 10
	if v == 0 {
		v = 0
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func (d *doc) raw(s string) { d.b.WriteString(s) }

func (d *doc) f(format string, args ...any) { fmt.Fprintf(&d.b, format, args...) }

// esc returns s as XML character data, also safe inside attributes quoted
// with ": markup characters become entities, and characters XML 1.0 does not
// allow (most control characters, invalid UTF-8) become U+FFFD. Written out
// rather than taken from encoding/xml, whose package initialisation every
// kuasar command would otherwise pay for.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '"':
			b.WriteString("&#34;")
		case r == '\'':
			b.WriteString("&#39;")
		case r == '\t' || r == '\n' || r == '\r':
			fmt.Fprintf(&b, "&#x%X;", r)
		case r == utf8.RuneError, r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			b.WriteRune('\uFFFD')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// text writes a text element; anchor is start, middle or end.
func (d *doc) text(x, y float64, anchor, extra, s string) {
	d.f(`<text x="%s" y="%s" text-anchor="%s"%s>%s</text>`+"\n", num(x), num(y), anchor, extra, esc(s))
}

func (d *doc) line(x1, y1, x2, y2 float64, attrs string) {
	d.f(`<line x1="%s" y1="%s" x2="%s" y2="%s" %s/>`+"\n", num(x1), num(y1), num(x2), num(y2), attrs)
}

// begin writes the document head, background and title.
func (d *doc) begin(title, desc string) {
	d.f(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="%d">`+"\n", Width, Height, Width, Height, fontSize)
	d.f("<title>%s</title>\n<desc>%s</desc>\n", esc(title), esc(desc))
	d.f(`<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", Width, Height)
	d.text(Width/2, 30, "middle", ` font-size="17" font-weight="bold"`, title)
}

func (d *doc) end(w io.Writer) error {
	d.raw("</svg>\n")
	if _, err := w.Write(d.b.Bytes()); err != nil {
		return fmt.Errorf("svgplot: writing the chart: %w", err)
	}
	return nil
}

// area is the plot area in pixels.
type area struct{ x0, y0, x1, y1 float64 }

// frame draws the grid, ticks, tick labels and axis labels of a plot area.
func (d *doc) frame(a area, x, y *axis, xlabel, ylabel string) {
	d.raw(`<g stroke="#e3e3e3" stroke-width="1">` + "\n")
	for _, t := range x.ticks {
		if t.minor {
			continue
		}
		px := x.pos(t.v)
		d.line(px, a.y0, px, a.y1, "")
	}
	for _, t := range y.ticks {
		if t.minor {
			continue
		}
		py := y.pos(t.v)
		d.line(a.x0, py, a.x1, py, "")
	}
	d.raw("</g>\n")
	d.f(`<rect class="frame" x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#555555"/>`+"\n", num(a.x0), num(a.y0), num(a.x1-a.x0), num(a.y1-a.y0))
	d.raw(`<g stroke="#555555">` + "\n")
	for _, t := range x.ticks {
		l := 6.0
		if t.minor {
			l = 3
		}
		px := x.pos(t.v)
		d.line(px, a.y1, px, a.y1+l, "")
	}
	for _, t := range y.ticks {
		l := 6.0
		if t.minor {
			l = 3
		}
		py := y.pos(t.v)
		d.line(a.x0-l, py, a.x0, py, "")
	}
	d.raw("</g>\n")
	d.raw(`<g fill="#333333">` + "\n")
	for _, t := range x.ticks {
		if t.label != "" {
			d.text(x.pos(t.v), a.y1+22, "middle", ` class="xtick"`, t.label)
		}
	}
	for _, t := range y.ticks {
		if t.label != "" {
			d.text(a.x0-10, y.pos(t.v)+4, "end", ` class="ytick"`, t.label)
		}
	}
	d.raw("</g>\n")
	if xlabel != "" {
		d.text((a.x0+a.x1)/2, a.y1+50, "middle", "", xlabel)
	}
	if ylabel != "" {
		cy := (a.y0 + a.y1) / 2
		d.f(`<text x="0" y="0" text-anchor="middle" transform="translate(%s %s) rotate(-90)">%s</text>`+"\n", num(22), num(cy), esc(ylabel))
	}
}

// legendEntry is one line of a legend, with an optional second line.
type legendEntry struct {
	name, detail string
	colour, dash string
	marker       int // -1 for none
}

// legend draws entries in a column right of the plot area.
func (d *doc) legend(a area, entries []legendEntry) {
	x := a.x1 + 16
	y := a.y0 + 8
	d.raw(`<g class="legend">` + "\n")
	for _, e := range entries {
		d.line(x, y, x+26, y, fmt.Sprintf(`stroke="%s" stroke-width="2.5"%s`, e.colour, dashAttr(e.dash)))
		if e.marker >= 0 {
			d.marker(e.marker, x+13, y, e.colour)
		}
		first, rest := wrap(e.name, legendWidth-50)
		d.text(x+34, y+4, "start", "", first)
		if rest != "" {
			y += 16
			d.text(x+34, y+4, "start", "", clip(rest, legendWidth-50))
		}
		y += 17
		if e.detail != "" {
			d.text(x+34, y+2, "start", ` font-size="11" fill="#555555"`, clip(e.detail, legendWidth-45))
			y += 17
		}
		y += 6
	}
	d.raw("</g>\n")
}

func dashAttr(s string) string {
	if s == "" {
		return ""
	}
	return ` stroke-dasharray="` + s + `"`
}

// wrap splits s at a space so that its first part fits about px pixels;
// rest is empty when s fits whole.
func wrap(s string, px float64) (first, rest string) {
	max := int(px / charWidth)
	r := []rune(s)
	if len(r) <= max {
		return s, ""
	}
	cut := strings.LastIndex(string(r[:max]), " ")
	if cut <= 0 {
		return clip(s, px), ""
	}
	return s[:cut], strings.TrimSpace(s[cut:])
}

// clip shortens s with an ellipsis to fit about px pixels.
func clip(s string, px float64) string {
	max := int(px / charWidth)
	r := []rune(s)
	if len(r) <= max || max < 2 {
		return s
	}
	return string(r[:max-1]) + "…"
}

// marker draws marker shape i (cycling) centred on (x, y).
func (d *doc) marker(i int, x, y float64, c string) {
	const r = 4.0
	fill := fmt.Sprintf(`fill="%s" stroke="#ffffff" stroke-width="1"`, c)
	switch i % 5 {
	case 0:
		d.f(`<circle cx="%s" cy="%s" r="%s" %s/>`+"\n", num(x), num(y), num(r), fill)
	case 1:
		d.f(`<rect x="%s" y="%s" width="%s" height="%s" %s/>`+"\n", num(x-r), num(y-r), num(2*r), num(2*r), fill)
	case 2:
		d.f(`<path d="M%s %sL%s %sL%s %sZ" %s/>`+"\n", num(x), num(y-r-1), num(x+r+1), num(y+r), num(x-r-1), num(y+r), fill)
	case 3:
		d.f(`<path d="M%s %sL%s %sL%s %sL%s %sZ" %s/>`+"\n", num(x), num(y-r-1), num(x+r+1), num(y), num(x), num(y+r+1), num(x-r-1), num(y), fill)
	default:
		d.f(`<path d="M%s %sL%s %sL%s %sZ" %s/>`+"\n", num(x), num(y+r+1), num(x+r+1), num(y-r), num(x-r-1), num(y-r), fill)
	}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
