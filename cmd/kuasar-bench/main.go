// Command kuasar-bench is the benchmark harness behind `kuasar bench`, built
// as its own binary so that the kuasar CLI does not link (and initialise, in
// every fresh `kuasar run` process) the CRI API, containerd's Sandbox and
// Task API clients, gRPC's client stack and the statistics and plotting
// code the harness needs. `kuasar bench` runs it with the same arguments,
// with KUASAR_STATE_DIR set to kuasar's state directory and
// KUASAR_BENCH_KUASAR to the kuasar executable the fresh-process arms run.
// Run by hand, it finds kuasar next to itself and needs KUASAR_STATE_DIR.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/bench"
)

// Environment variables `kuasar bench` sets for this helper.
const (
	// stateDirEnv is kuasar's state directory (the lock and the harness's
	// caches live under it, in bench/).
	stateDirEnv = "KUASAR_STATE_DIR"
	// kuasarEnv is the kuasar executable the fresh-process arms run and
	// the reproduce commands name.
	kuasarEnv = "KUASAR_BENCH_KUASAR"
)

func main() {
	level := os.Getenv("KUASAR_LOG_LEVEL")
	if level == "" {
		level = "warn"
	}
	if err := log.SetLevel(level); err != nil {
		fmt.Fprintf(os.Stderr, "kuasar bench: KUASAR_LOG_LEVEL=%q: use trace, debug, info, warn or error\n", level)
		os.Exit(2)
	}
	// `kuasar bench` forwards SIGINT and SIGTERM; a cancelled run stops
	// what it started before it exits.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// run parses the bench command line and runs the harness; it returns the
// exit code: 0, 1 for a failed run, 2 for a bad command line.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := bench.Options{Stdout: stdout, Stderr: stderr}
	fs.BoolVar(&o.Quick, "quick", false, "fewer samples and shorter scaling curves (under 3 minutes on 2 cores); without scenario names, the quick scenarios")
	fs.StringVar(&o.JSON, "json", "", "write every sample and the machine's description as JSON to `FILE`")
	fs.StringVar(&o.PlotDir, "plot", "", "write SVG plots (latency CDFs, scaling curves, density bars) into `DIR`")
	fs.IntVar(&o.Runs, "runs", 0, "samples per series (`N`; default per scenario); for density, the one number of idle sandboxes")
	list := fs.Bool("list", false, "list the scenarios and exit")
	fs.Usage = func() { usage(fs.Output(), fs) }
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" || a == "-help" }) {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	fs.SetOutput(stderr)
	// Scenario names and flags may come in any order.
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
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
			fmt.Fprintf(stdout, "%-11s %s%s\n", s.Name, s.Summary, q)
		}
		return 0
	}
	var err error
	if o.StateDir, o.Binary, err = fromKuasar(); err != nil {
		fmt.Fprintf(stderr, "kuasar bench: %v\n", err)
		return 2
	}
	if err := bench.Run(ctx, o); err != nil {
		fmt.Fprintf(stderr, "kuasar bench: %v\n", err)
		if errors.Is(err, errdefs.ErrInvalidArgument) {
			return 2
		}
		return 1
	}
	return 0
}

// fromKuasar returns the state directory and the kuasar executable that
// `kuasar bench` passed, or, for the executable, kuasar next to this one.
func fromKuasar() (stateDir, kuasar string, err error) {
	stateDir = os.Getenv(stateDirEnv)
	if stateDir == "" {
		return "", "", fmt.Errorf("%s is not set: run the harness as kuasar bench, or set it to kuasar's state directory: %w", stateDirEnv, errdefs.ErrInvalidArgument)
	}
	if kuasar = os.Getenv(kuasarEnv); kuasar != "" {
		return stateDir, kuasar, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("finding this executable: %w", err)
	}
	kuasar = filepath.Join(filepath.Dir(self), "kuasar")
	if _, err := os.Stat(kuasar); err != nil {
		return "", "", fmt.Errorf("kuasar is not next to %s: run the harness as kuasar bench or set %s: %w", self, kuasarEnv, errdefs.ErrNotFound)
	}
	return stateDir, kuasar, nil
}

func usage(w io.Writer, fs *flag.FlagSet) {
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
