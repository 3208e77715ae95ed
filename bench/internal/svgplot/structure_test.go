package svgplot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// element is a parsed SVG element with its text.
type element struct {
	name  string
	attrs map[string]string
	text  string
}

// parse decodes svg with encoding/xml, failing the test on invalid XML, and
// returns its elements in document order.
func parse(t *testing.T, svg []byte) []element {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var out []element
	var open []int
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := element{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			out = append(out, e)
			open = append(open, len(out)-1)
		case xml.EndElement:
			open = open[:len(open)-1]
		case xml.CharData:
			if len(open) > 0 {
				out[open[len(open)-1]].text += string(tok)
			}
		}
	}
	if len(out) == 0 || out[0].name != "svg" {
		t.Fatalf("document does not start with <svg>:\n%s", svg)
	}
	return out
}

func find(es []element, name, class string) []element {
	var out []element
	for _, e := range es {
		if e.name == name && (class == "" || e.attrs["class"] == class) {
			out = append(out, e)
		}
	}
	return out
}

// pathPoints returns the absolute points of an M/L/H/V path.
func pathPoints(t *testing.T, d string) [][2]float64 {
	t.Helper()
	var pts [][2]float64
	var x, y float64
	i := 0
	number := func() float64 {
		j := i
		for j < len(d) && (d[j] == '-' || d[j] == '.' || (d[j] >= '0' && d[j] <= '9')) {
			j++
		}
		v, err := strconv.ParseFloat(d[i:j], 64)
		if err != nil {
			t.Fatalf("path %q: bad number at %d: %v", d, i, err)
		}
		i = j
		for i < len(d) && d[i] == ' ' {
			i++
		}
		return v
	}
	for i < len(d) {
		c := d[i]
		i++
		switch c {
		case 'M', 'L':
			x = number()
			y = number()
		case 'H':
			x = number()
		case 'V':
			y = number()
		case 'Z':
			continue
		default:
			t.Fatalf("path %q: unexpected command %q", d, c)
		}
		pts = append(pts, [2]float64{x, y})
	}
	return pts
}

func attrFloat(t *testing.T, e element, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(e.attrs[name], 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", e.name, name, e.attrs[name], err)
	}
	return v
}

// plotArea returns the frame rectangle.
func plotArea(t *testing.T, es []element) area {
	t.Helper()
	f := find(es, "rect", "frame")
	if len(f) != 1 {
		t.Fatalf("want one frame, found %d", len(f))
	}
	x, y := attrFloat(t, f[0], "x"), attrFloat(t, f[0], "y")
	return area{x, y, x + attrFloat(t, f[0], "width"), y + attrFloat(t, f[0], "height")}
}

func inArea(a area, p [2]float64) bool {
	const slack = 0.11 // coordinates are rounded to 0.1
	return p[0] >= a.x0-slack && p[0] <= a.x1+slack && p[1] >= a.y0-slack && p[1] <= a.y1+slack
}

func texts(es []element, class string) []string {
	var out []string
	for _, e := range find(es, "text", class) {
		out = append(out, e.text)
	}
	return out
}

func render(t *testing.T, f func(*bytes.Buffer) error) []element {
	t.Helper()
	var b bytes.Buffer
	if err := f(&b); err != nil {
		t.Fatal(err)
	}
	return parse(t, b.Bytes())
}

func TestCDFStructure(t *testing.T) {
	c := goldenCDF()
	es := render(t, func(b *bytes.Buffer) error { return CDF(b, c) })
	a := plotArea(t, es)
	series := find(es, "path", "series")
	if len(series) != len(c.Series) {
		t.Fatalf("%d series drawn, want %d", len(series), len(c.Series))
	}
	for i, s := range series {
		pts := pathPoints(t, s.attrs["d"])
		for j, p := range pts {
			if !inArea(a, p) {
				t.Fatalf("series %d point %v outside the plot area %+v", i, p, a)
			}
			if j > 0 && (p[0] < pts[j-1][0] || p[1] > pts[j-1][1]) {
				t.Fatalf("series %d is not monotone at point %d: %v after %v", i, j, p, pts[j-1])
			}
		}
		if first, last := pts[0][1], pts[len(pts)-1][1]; first != a.y1 || last != a.y0 {
			t.Fatalf("series %d runs from y=%v to y=%v, want 0%% (%v) to 100%% (%v)", i, first, last, a.y1, a.y0)
		}
	}
	if got, want := strings.Join(texts(es, "xtick"), ","), "2 ms,5 ms,10 ms,20 ms,50 ms,100 ms,200 ms,500 ms"; got != want {
		t.Fatalf("x tick labels %s, want %s", got, want)
	}
	if got, want := strings.Join(texts(es, "ytick"), ","), "0%,20%,40%,60%,80%,100%"; got != want {
		t.Fatalf("y tick labels %s, want %s", got, want)
	}
	if got := find(es, "title", "")[0].text; got != c.Title {
		t.Fatalf("title %q, want %q (escaped and read back)", got, c.Title)
	}
}

func TestCDFOneValue(t *testing.T) {
	for _, logX := range []bool{false, true} {
		es := render(t, func(b *bytes.Buffer) error {
			return CDF(b, CDFChart{Title: "one", LogX: logX, Series: []Samples{{Name: "a", Values: []float64{0.002}, Unit: "s"}}})
		})
		a := plotArea(t, es)
		for _, p := range pathPoints(t, find(es, "path", "series")[0].attrs["d"]) {
			if !inArea(a, p) {
				t.Fatalf("log=%v: point %v outside the plot area %+v", logX, p, a)
			}
		}
	}
}

func TestCDFLargeSampleStaysSmall(t *testing.T) {
	c := CDFChart{Title: "big", Series: []Samples{{Name: "a", Values: latencies(9, 100000, 0.001, 0.3), Unit: "s"}}}
	var b bytes.Buffer
	if err := CDF(&b, c); err != nil {
		t.Fatal(err)
	}
	if b.Len() > 20<<10 {
		t.Fatalf("a 100,000-sample CDF is %d bytes; it should be drawn through %d quantiles", b.Len(), maxSteps)
	}
	es := parse(t, b.Bytes())
	if n := len(pathPoints(t, find(es, "path", "series")[0].attrs["d"])); n != maxSteps+1 {
		t.Fatalf("%d points drawn, want %d", n, maxSteps+1)
	}
}

func TestLinesStructure(t *testing.T) {
	for _, c := range []LineChart{goldenLines(), goldenRSS()} {
		t.Run(c.Title, func(t *testing.T) {
			es := render(t, func(b *bytes.Buffer) error { return Lines(b, c) })
			a := plotArea(t, es)
			for _, class := range []string{"series", "band"} {
				for _, s := range find(es, "path", class) {
					for _, p := range pathPoints(t, s.attrs["d"]) {
						if !inArea(a, p) {
							t.Fatalf("%s point %v outside the plot area %+v", class, p, a)
						}
					}
				}
			}
			if n := len(find(es, "path", "series")); n != len(c.Series) {
				t.Fatalf("%d series drawn, want %d", n, len(c.Series))
			}
			markers := 0
			for _, g := range find(es, "g", "markers") {
				_ = g
				markers++
			}
			if markers != len(c.Series) {
				t.Fatalf("%d marker groups, want one per series (%d)", markers, len(c.Series))
			}
		})
	}
	es := render(t, func(b *bytes.Buffer) error { return Lines(b, goldenLines()) })
	if n := len(find(es, "path", "band")); n != 1 {
		t.Fatalf("%d bands, want 1 (only the p50 series has intervals)", n)
	}
	if got, want := strings.Join(texts(es, "xtick"), ","), "1,2,5,10,20,50,100,200"; got != want {
		t.Fatalf("x tick labels %s, want %s", got, want)
	}
	if got, want := strings.Join(texts(es, "ytick"), ","), "2 ms,5 ms,10 ms,20 ms,50 ms,100 ms,200 ms"; got != want {
		t.Fatalf("y tick labels %s, want %s", got, want)
	}
	es = render(t, func(b *bytes.Buffer) error { return Lines(b, goldenRSS()) })
	if got, want := strings.Join(texts(es, "ytick"), ","), "0,200 MiB,400 MiB,600 MiB,800 MiB,1000 MiB"; got != want {
		t.Fatalf("RSS tick labels %s, want %s", got, want)
	}
}

func TestBarsStructure(t *testing.T) {
	rotated := goldenBars()
	rotated.Title = "rotated names"
	rotated.Bars = append(rotated.Bars, Bar{Name: "a long runtime name, rotated", Value: 50 << 20}, Bar{Name: "quark (stand-in)", Value: 20 << 20, Low: 19 << 20, High: 22 << 20})
	for _, c := range []BarChart{goldenBars(), goldenBarsH(), rotated} {
		t.Run(c.Title, func(t *testing.T) {
			es := render(t, func(b *bytes.Buffer) error { return Bars(b, c) })
			a := plotArea(t, es)
			bars := find(es, "rect", "bar")
			if len(bars) != len(c.Bars) {
				t.Fatalf("%d bars drawn, want %d", len(bars), len(c.Bars))
			}
			for i, r := range bars {
				x, y := attrFloat(t, r, "x"), attrFloat(t, r, "y")
				w, h := attrFloat(t, r, "width"), attrFloat(t, r, "height")
				if !inArea(a, [2]float64{x, y}) || !inArea(a, [2]float64{x + w, y + h}) {
					t.Fatalf("bar %d [%v %v %v %v] outside the plot area %+v", i, x, y, w, h, a)
				}
			}
			// Bar lengths are proportional to values.
			size := func(r element) float64 {
				if c.Horizontal {
					return attrFloat(t, r, "width")
				}
				return attrFloat(t, r, "height")
			}
			big := 0
			for i, b := range c.Bars {
				if b.Value > c.Bars[big].Value {
					big = i
				}
			}
			perUnit := size(bars[big]) / c.Bars[big].Value
			for i, b := range c.Bars {
				if got, want := size(bars[i]), b.Value*perUnit; math.Abs(got-want) > 0.15 {
					t.Fatalf("bar %d is %.1f px long, want %.1f (proportional to its value)", i, got, want)
				}
			}
			whiskers := 0
			for _, b := range c.Bars {
				if whisker(b) {
					whiskers++
				}
			}
			if n := len(find(es, "line", "whisker")); n != whiskers {
				t.Fatalf("%d whiskers, want %d", n, whiskers)
			}
			for _, e := range find(es, "text", "name") {
				tr := e.attrs["transform"]
				if tr == "" {
					continue
				}
				var x, y, deg float64
				if _, err := fmt.Sscanf(tr, "translate(%g %g) rotate(%g)", &x, &y, &deg); err != nil {
					t.Fatalf("transform %q: %v", tr, err)
				}
				// The name's far end, from the same glyph-width estimate.
				if bottom := y + float64(len([]rune(e.text)))*charWidth*math.Sin(-deg*math.Pi/180); bottom > Height {
					t.Fatalf("rotated name %q reaches y=%.0f, below the chart (%d)", e.text, bottom, Height)
				}
			}
			names := texts(es, "name")
			for i, b := range c.Bars {
				if names[i] != b.Name {
					t.Fatalf("bar %d labelled %q, want %q", i, names[i], b.Name)
				}
			}
		})
	}
	es := render(t, func(b *bytes.Buffer) error { return Bars(b, goldenBars()) })
	if got, want := strings.Join(texts(es, "value"), ","), "96 KiB,180 MiB,2 MiB"; got != want {
		t.Fatalf("value labels %s, want %s", got, want)
	}
}

func TestEscaping(t *testing.T) {
	hostile := `</text><script>alert("x")</script> & ]]> ` + "\x00\x1b"
	es := render(t, func(b *bytes.Buffer) error {
		return Bars(b, BarChart{Title: hostile, YLabel: hostile, Bars: []Bar{{Name: hostile, Value: 1}}})
	})
	if len(find(es, "script", "")) != 0 {
		t.Fatal("a name became markup")
	}
	if got := find(es, "title", "")[0].text; !strings.HasPrefix(got, `</text><script>alert("x")</script> & ]]> `) {
		t.Fatalf("title read back as %q", got)
	}
	es = render(t, func(b *bytes.Buffer) error {
		return CDF(b, CDFChart{Title: "t", Series: []Samples{{Name: hostile, Values: []float64{1, 2}, Unit: "s"}}})
	})
	if len(find(es, "script", "")) != 0 {
		t.Fatal("a series name became markup")
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"CDF without series", func(w io.Writer) error { return CDF(w, CDFChart{Title: "x"}) }},
		{"CDF of NaN", func(w io.Writer) error {
			return CDF(w, CDFChart{Series: []Samples{{Name: "a", Values: []float64{math.NaN()}}}})
		}},
		{"log CDF of zeros", func(w io.Writer) error {
			return CDF(w, CDFChart{LogX: true, Series: []Samples{{Name: "a", Values: []float64{0, -1}}}})
		}},
		{"CDF mixing units", func(w io.Writer) error {
			return CDF(w, CDFChart{Series: []Samples{{Name: "a", Values: []float64{1}, Unit: "s"}, {Name: "b", Values: []float64{1}, Unit: "B"}}})
		}},
		{"Lines without points", func(w io.Writer) error { return Lines(w, LineChart{Series: []Line{{Name: "a"}}}) }},
		{"log Lines at 0", func(w io.Writer) error {
			return Lines(w, LineChart{LogY: true, Series: []Line{{Name: "a", Points: []Point{{X: 1, Y: 0}}}}})
		}},
		{"Bars without bars", func(w io.Writer) error { return Bars(w, BarChart{}) }},
		{"Bars with Inf", func(w io.Writer) error { return Bars(w, BarChart{Bars: []Bar{{Name: "a", Value: math.Inf(1)}}}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			err := tt.write(&b)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want an invalid-argument error", err)
			}
			if b.Len() != 0 {
				t.Fatalf("a failed chart wrote %d bytes", b.Len())
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteError(t *testing.T) {
	if err := Bars(failWriter{}, goldenBars()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the writer's error", err)
	}
}

func TestTicks(t *testing.T) {
	tests := []struct {
		name     string
		min, max float64
		log      bool
		zero     bool
		unit     string
		want     string
	}{
		{"seconds linear", 0.0013, 0.0042, false, false, "s", "1 ms,2 ms,3 ms,4 ms,5 ms"},
		{"microseconds from zero", 0, 0.00047, false, true, "s", "0,100 µs,200 µs,300 µs,400 µs,500 µs"},
		{"counts 1-2-5", 3, 97, false, true, "", "0,20,40,60,80,100"},
		{"thousands", 0, 2300, false, true, "tasks/s", "0,0.5k tasks/s,1.0k tasks/s,1.5k tasks/s,2.0k tasks/s,2.5k tasks/s"},
		{"binary bytes", 0, 3 << 30, false, true, "B", "0,1 GiB,2 GiB,3 GiB"},
		{"log counts", 1, 10000, true, false, "", "1,10,100,1k,10k"},
		{"KiB values", 0, 3000, false, true, "KiB", "0,1 MiB,2 MiB,3 MiB"},
		{"KiB values below a MiB", 90, 140, false, false, "KiB", "90 KiB,100 KiB,110 KiB,120 KiB,130 KiB,140 KiB"},
		{"MiB values", 0, 700, false, true, "MiB", "0,200 MiB,400 MiB,600 MiB,800 MiB"},
		{"other unit, no prefix", 0, 40, false, true, "goroutines", "0,10 goroutines,20 goroutines,30 goroutines,40 goroutines"},
		{"log seconds few decades", 0.00021, 0.0031, true, false, "s", "200 µs,500 µs,1 ms,2 ms,5 ms"},
		{"single value", 7, 7, false, true, "", "0,2,4,6,8"},
		{"single value, no zero", 0.003, 0.003, false, false, "s", "1 ms,2 ms,3 ms,4 ms,5 ms"},
		{"log single 1-2-5 value", 0.002, 0.002, true, false, "s", "2 ms,5 ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a *axis
			if tt.log {
				a = logAxis(tt.min, tt.max, tt.unit, 0, 100)
			} else {
				a = linearAxis(tt.min, tt.max, tt.zero, tt.unit, 0, 100)
			}
			var labels []string
			for _, tk := range a.ticks {
				if tk.label != "" {
					labels = append(labels, tk.label)
				}
				if !a.inside(tk.v) {
					t.Fatalf("tick %v outside the axis [%v, %v]", tk.v, a.lo, a.hi)
				}
			}
			if got := strings.Join(labels, ","); got != tt.want {
				t.Fatalf("ticks %s, want %s", got, tt.want)
			}
			if !a.inside(tt.min) || !a.inside(tt.max) {
				t.Fatalf("axis [%v, %v] does not cover [%v, %v]", a.lo, a.hi, tt.min, tt.max)
			}
		})
	}
}

func TestEsc(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain µs", "plain µs"},
		{`a<b>&"c'`, "a&lt;b&gt;&amp;&#34;c&#39;"},
		{"tab\tnl\n", "tab&#x9;nl&#xA;"},
		{"nul\x00esc\x1b", "nul\uFFFDesc\uFFFD"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
	}
	for _, tt := range tests {
		got := esc(tt.in)
		if got != tt.want {
			t.Errorf("esc(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// Every output is valid XML text that reads back as the input with
		// forbidden characters replaced.
		var v struct {
			Text string `xml:",chardata"`
		}
		if err := xml.Unmarshal([]byte("<t>"+got+"</t>"), &v); err != nil {
			t.Errorf("esc(%q) = %q is not valid XML: %v", tt.in, got, err)
		}
	}
}
