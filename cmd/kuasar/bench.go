package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/bench"
)

func init() {
	register("bench", "Measure kuasar beside runc and other baselines: table, JSON, SVG plots", runBench)
}

func runBench(ctx context.Context, env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := bench.Options{StateDir: env.stateDir, Stdout: env.stdout, Stderr: env.stderr}
	fs.BoolVar(&o.Quick, "quick", false, "fewer samples and shorter scaling curves (under 3 minutes on 2 cores); without scenario names, the quick scenarios")
	fs.StringVar(&o.JSON, "json", "", "write every sample and the machine's description as JSON to `FILE`")
	fs.StringVar(&o.PlotDir, "plot", "", "write SVG plots (latency CDFs, scaling curves, density bars) into `DIR`")
	fs.IntVar(&o.Runs, "runs", 0, "samples per series (`N`; default per scenario); for density, the one number of idle sandboxes")
	list := fs.Bool("list", false, "list the scenarios and exit")
	fs.Usage = func() { benchUsage(fs.Output(), fs) }
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" || a == "-help" }) {
		fs.SetOutput(env.stdout)
		fs.Usage()
		return 0
	}
	// Scenario names and flags may come in any order.
	for {
		if code, ok := parseFlags(fs, env, args); !ok {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		o.Scenarios = append(o.Scenarios, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *list {
		for _, s := range bench.Scenarios() {
			q := ""
			if s.Quick {
				q = " (quick)"
			}
			fmt.Fprintf(env.stdout, "%-11s %s%s\n", s.Name, s.Summary, q)
		}
		return 0
	}
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintf(env.stderr, "kuasar bench: %v\n", err)
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return 2
		}
		return 1
	}
	return 0
}

func benchUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, `usage: kuasar bench [SCENARIO...] [--quick] [--json FILE] [--plot DIR] [--runs N]

Measures kuasar's scenarios beside baselines taken in the same run, sample by
sample in turn (runc, containerd's runc handler, a fresh wazero process per
Wasm task, bare QEMU), prints a table (median, p95, p99, ratio to each baseline
with its 95% interval, targets) and, on request, every sample as JSON and SVG
plots. Needs root and the tools of make deps; make build's binaries are found
next to this one. Each scenario prints the command that reproduces it.

scenarios (all when none is named; --quick alone runs those marked quick):`)
	for _, s := range bench.Scenarios() {
		q := ""
		if s.Quick {
			q = " (quick)"
		}
		fmt.Fprintf(w, "  %-11s %s%s\n", s.Name, s.Summary, q)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
}
