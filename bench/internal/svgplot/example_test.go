package svgplot_test

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/kuasar-go/kuasar/bench/internal/svgplot"
)

func ExampleCDF() {
	var b bytes.Buffer
	err := svgplot.CDF(&b, svgplot.CDFChart{
		Title:  "Start to exit",
		XLabel: "latency",
		LogX:   true,
		Series: []svgplot.Samples{
			{Name: "kuasar wasm", Values: []float64{0.0041, 0.0039, 0.0044, 0.0040}, Unit: "s"},
			{Name: "runc", Values: []float64{0.151, 0.149, 0.160, 0.155}, Unit: "s"},
		},
	})
	fmt.Println(err, strings.Count(b.String(), `class="series"`), "series")
	// Output: <nil> 2 series
}

func ExampleLines() {
	var b bytes.Buffer
	err := svgplot.Lines(&b, svgplot.LineChart{
		Title: "Start latency against concurrency", XLabel: "concurrent starts", YLabel: "p50 start to exit",
		LogX: true, YUnit: "s",
		Series: []svgplot.Line{{Name: "kuasar wasm", Points: []svgplot.Point{
			{X: 1, Y: 0.004, YLow: 0.0038, YHigh: 0.0042},
			{X: 8, Y: 0.006, YLow: 0.0055, YHigh: 0.0064},
			{X: 128, Y: 0.040, YLow: 0.036, YHigh: 0.044},
		}}},
	})
	fmt.Println(err, strings.Contains(b.String(), ">40 ms<"))
	// Output: <nil> true
}

func ExampleBars() {
	var b bytes.Buffer
	err := svgplot.Bars(&b, svgplot.BarChart{
		Title: "RSS per idle sandbox", YLabel: "RSS", Unit: "B", Horizontal: true,
		Bars: []svgplot.Bar{{Name: "wasm", Value: 96 << 10}, {Name: "vm", Value: 180 << 20, Low: 170 << 20, High: 200 << 20}},
	})
	fmt.Println(err, strings.Contains(b.String(), ">96 KiB<"), strings.Contains(b.String(), ">180 MiB<"))
	// Output: <nil> true true
}
