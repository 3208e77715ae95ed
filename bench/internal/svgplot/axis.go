package svgplot

import (
	"math"
	"slices"
	"strconv"
	"strings"
)

// tick is one axis tick; minor ticks have no label and no grid line.
type tick struct {
	v     float64
	label string
	minor bool
}

// axis maps data values to pixels between p0 and p1.
type axis struct {
	lo, hi float64
	log    bool
	p0, p1 float64
	ticks  []tick
}

// pos returns the pixel of v.
func (a *axis) pos(v float64) float64 {
	var t float64
	if a.log {
		t = (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	} else {
		t = (v - a.lo) / (a.hi - a.lo)
	}
	return a.p0 + t*(a.p1-a.p0)
}

// inside reports whether v lies on the axis (with a little slack for
// rounding).
func (a *axis) inside(v float64) bool {
	return v >= a.lo*(1-1e-12)-1e-300 && v <= a.hi*(1+1e-12)+1e-300
}

// niceStep returns the 1-2-5 step that gives about n intervals over span.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw*0.999 {
			return m * mag
		}
	}
	return 10 * mag
}

// linearAxis builds a linear axis covering [min, max] (and 0 when
// withZero) with 1-2-5 ticks labelled in unit.
func linearAxis(min, max float64, withZero bool, unit string, p0, p1 float64) *axis {
	if withZero {
		min, max = math.Min(min, 0), math.Max(max, 0)
	}
	if min == max {
		if min == 0 {
			max = 1
		} else {
			d := math.Abs(min) / 2
			min, max = min-d, max+d
			if withZero && min < 0 && max > 0 {
				min = 0
			}
		}
	}
	scale, suffix := unitScale(unit, math.Max(math.Abs(min), math.Abs(max)))
	step := niceStep((max-min)/scale, 5)
	lo := math.Floor(min/scale/step) * step
	hi := math.Ceil(max/scale/step) * step
	a := &axis{lo: lo * scale, hi: hi * scale, p0: p0, p1: p1}
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	for i := 0; ; i++ {
		v := lo + float64(i)*step
		if v > hi+step/1e6 {
			break
		}
		v = math.Round(v/step) * step // no 0.30000000000000004
		label := "0"                  // a bare 0 reads better than "0 ms" or "0k"
		if v != 0 {
			label = strconv.FormatFloat(v, 'f', decimals, 64) + suffix
		}
		a.ticks = append(a.ticks, tick{v: v * scale, label: label})
	}
	return a
}

// logAxis builds a base-10 log axis from the largest 1-2-5 value at or
// below min to the smallest at or above max (both > 0). Powers of ten are
// labelled, and 2 and 5 too when the axis spans at most three decades.
func logAxis(min, max float64, unit string, p0, p1 float64) *axis {
	lo, hi := below125(min), above125(max)
	if hi <= lo {
		hi = above125(lo * 1.0001)
	}
	a := &axis{lo: lo, hi: hi, log: true, p0: p0, p1: p1}
	few := math.Log10(hi/lo) <= 3
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow(10, e)
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := tick{v: v, minor: true}
			if m == 1 || (few && (m == 2 || m == 5)) {
				t.minor = false
				t.label = formatValue(v, unit)
			}
			a.ticks = append(a.ticks, t)
		}
	}
	return a
}

// below125 returns the largest of 1, 2 or 5 times a power of ten at or
// below v; above125 the smallest at or above.
func below125(v float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{5, 2, 1} {
		if m*mag <= v*(1+1e-12) {
			return m * mag
		}
	}
	return mag / 2
}

func above125(v float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= v*(1-1e-12) {
			return m * mag
		}
	}
	return 10 * mag
}

// binaryUnits are the byte units values may come in, each 1024 times the
// one before.
var binaryUnits = []string{"B", "KiB", "MiB", "GiB", "TiB"}

// unitScale returns the divisor for labelling values up to max in unit, and
// the text that follows a scaled number: seconds go down to " ns"; bytes in
// any of binaryUnits go up by powers of 1024 (" KiB", " MiB"); anything else
// goes up by powers of 1000 from 1000 ("k", "k tasks/s").
func unitScale(unit string, max float64) (float64, string) {
	if unit == "s" {
		for _, p := range []struct {
			f float64
			s string
		}{{1, " s"}, {1e-3, " ms"}, {1e-6, " µs"}} {
			if max >= p.f {
				return p.f, p.s
			}
		}
		return 1e-9, " ns"
	}
	if base := slices.Index(binaryUnits, unit); base >= 0 {
		// Work in bytes: values are in 1024^base bytes.
		inBase := math.Pow(1024, float64(base))
		bytes := max * inBase
		i := 0
		for i < len(binaryUnits)-1 && bytes >= math.Pow(1024, float64(i+1)) {
			i++
		}
		return math.Pow(1024, float64(i)) / inBase, " " + binaryUnits[i]
	}
	after := ""
	if unit != "" {
		after = " " + unit
	}
	if max < 1e3 {
		return 1, after
	}
	f := 1.0
	for _, p := range []string{"k", "M", "G", "T"} {
		f *= 1000
		if max < f*1000 || p == "T" {
			return f, p + after
		}
	}
	return 1, after
}

// formatValue labels one value in unit with its own scale and at most
// three significant digits.
func formatValue(v float64, unit string) string {
	scale, suffix := unitScale(unit, math.Abs(v))
	s := strconv.FormatFloat(v/scale, 'g', 3, 64)
	if strings.ContainsAny(s, "e") {
		s = strconv.FormatFloat(v/scale, 'f', -1, 64)
	}
	return s + suffix
}
