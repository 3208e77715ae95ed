package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kuasar-go/kuasar/bench/internal/svgplot"
)

// plotUnit converts a value in one of the report's units to the unit the
// plotting library scales by itself ("s", "B", "" for a count).
func plotUnit(v float64, unit string) (float64, string) {
	switch unit {
	case "KiB":
		return v * 1024, "B"
	case "MiB":
		return v * (1 << 20), "B"
	case "goroutines", "fds":
		return v, ""
	}
	return v, unit
}

// writePlots writes the report's SVG plots into dir and returns their
// paths: per scenario a latency CDF of its series, its scaling curves (one
// chart per quantity), density bars; and one chart of every ratio to a
// baseline with its interval.
func writePlots(dir string, rep *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--plot: %w", err)
	}
	var files []string
	var errs []error
	write := func(name string, draw func(*bytes.Buffer) error) {
		var b bytes.Buffer
		if err := draw(&b); err != nil {
			errs = append(errs, fmt.Errorf("plot %s: %w", name, err))
			return
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			errs = append(errs, err)
			return
		}
		files = append(files, p)
	}
	var ratios []svgplot.Bar
	for _, res := range rep.Scenarios {
		var cdf []svgplot.Samples
		for _, s := range res.Series {
			if s.Unit == "s" && len(s.Samples) > 0 && !s.noRatio {
				name := s.Name
				if s.Baseline {
					name += " (baseline)"
				}
				cdf = append(cdf, svgplot.Samples{Name: name, Values: s.Samples, Unit: "s"})
			}
		}
		if len(cdf) > 0 {
			write(res.Name+"-cdf.svg", func(b *bytes.Buffer) error {
				return svgplot.CDF(b, svgplot.CDFChart{Title: res.Name + ": latency distribution", XLabel: "latency (log scale)", LogX: true, Series: cdf})
			})
		}
		// One chart per quantity: curves sharing a unit and an x axis.
		type group struct {
			key    string
			curves []*Curve
		}
		var groups []*group
		for _, c := range res.Curves {
			if len(c.Points) == 0 {
				continue
			}
			key := c.XLabel + "|" + c.Unit + "|" + c.YLabel
			var g *group
			for _, x := range groups {
				if x.key == key {
					g = x
				}
			}
			if g == nil {
				g = &group{key: key}
				groups = append(groups, g)
			}
			g.curves = append(g.curves, c)
		}
		for i, g := range groups {
			first := g.curves[0]
			_, yunit := plotUnit(0, first.Unit)
			chart := svgplot.LineChart{Title: res.Name + ": " + first.YLabel + " by " + first.XLabel, XLabel: first.XLabel,
				YLabel: first.YLabel, LogX: true, LogY: first.Unit == "s", YUnit: yunit}
			for _, c := range g.curves {
				l := svgplot.Line{Name: c.Name}
				for _, p := range c.Points {
					y, _ := plotUnit(p.Y, c.Unit)
					l.Points = append(l.Points, svgplot.Point{X: p.X, Y: y})
				}
				chart.Series = append(chart.Series, l)
			}
			write(fmt.Sprintf("%s-curve%d-%s.svg", res.Name, i+1, slug(first.Name)), func(b *bytes.Buffer) error { return svgplot.Lines(b, chart) })
		}
		if bars := densityBars(res); len(bars) > 0 {
			write(res.Name+"-bars.svg", func(b *bytes.Buffer) error {
				return svgplot.Bars(b, svgplot.BarChart{Title: res.Name + ": memory per idle Wasm workload", YLabel: "RSS", Unit: "B", Bars: bars, Horizontal: true})
			})
		}
		for _, ra := range res.Ratios {
			ratios = append(ratios, svgplot.Bar{Name: res.Name + ": " + ra.Series + " vs " + ra.Baseline, Value: ra.Ratio, Low: ra.Low, High: ra.High})
		}
	}
	if len(ratios) > 0 {
		write("ratios.svg", func(b *bytes.Buffer) error {
			return svgplot.Bars(b, svgplot.BarChart{Title: "how many times faster than each baseline (median ratio, 95% interval)", YLabel: "× faster", Unit: "×", Bars: ratios, Horizontal: true})
		})
	}
	return files, errors.Join(errs...)
}

// densityBars are the bars of a density scenario: the sandboxer's RSS per
// idle sandbox at each level of its curve, beside the baselines' RSS per
// process.
func densityBars(res *ScenarioResult) []svgplot.Bar {
	var bars []svgplot.Bar
	for _, c := range res.Curves {
		if c.Unit != "KiB" {
			continue
		}
		// The first curve in KiB is the RSS per sandbox; the others are
		// its parts.
		for _, p := range c.Points {
			bars = append(bars, svgplot.Bar{Name: fmt.Sprintf("kuasar sandbox, %g live", p.X), Value: p.Y * 1024})
		}
		break
	}
	if len(bars) == 0 {
		return nil
	}
	for _, s := range res.Series {
		if s.Unit == "KiB" && s.Stats.N > 0 {
			bars = append(bars, svgplot.Bar{Name: s.Name, Value: s.Stats.Median * 1024, Low: s.Stats.Min * 1024, High: s.Stats.Max * 1024})
		}
	}
	return bars
}

func slug(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}
