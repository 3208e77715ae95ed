// Package bench is kuasar-go's benchmark harness, run as `kuasar bench`: it
// measures named scenarios (a Wasm sandbox's start to exit over the
// sandboxer's API, the same through containerd's CRI API and crictl,
// sustained throughput, idle density, compile cache, VM start, VM density) together
// with baselines taken in the same run, interleaved sample by sample so
// that machine drift cancels (runc, containerd's runc handler, a fresh
// process per Wasm task, bare QEMU), and scaling curves. It prints a live
// progress line per scenario and a table (median, p95, p99, the ratio to
// each baseline with its 95% interval, each target met or not), and writes
// every sample with the machine it ran on as JSON and the figures as SVG
// plots.
//
// Every scenario result carries the command that reproduces it alone.
// Interrupting a run (^C, SIGTERM) kills every process it started,
// daemonised shims and VMMs included (see internal/reap), and two runs on
// one state directory refuse to overlap (a lock file).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/bench/internal/reap"
	"github.com/kuasar-go/kuasar/bench/internal/rig"
)

// Options configures Run.
type Options struct {
	// Scenarios names the scenarios to run; empty runs all of them
	// (with Quick, all the quick ones).
	Scenarios []string
	// Quick runs fewer samples and smaller scaling curves: under three
	// minutes on a 2-core machine.
	Quick bool
	// Runs overrides the number of samples per series (0: the scenario's
	// default, smaller with Quick).
	Runs int
	// JSON, when set, is the file the report is written to.
	JSON string
	// PlotDir, when set, is the directory SVG plots are written into.
	PlotDir string
	// StateDir is kuasar's state directory: the lock and the harness's
	// own caches (compiled test binaries, the wazero CLI's cache) live
	// under StateDir/bench.
	StateDir string
	// Stdout receives the table; Stderr the progress lines and notes.
	Stdout, Stderr io.Writer
	// Binary is the kuasar executable, for the fresh-process arms and the
	// reproduce commands; empty means this process's executable.
	Binary string
}

// Scenario describes one scenario the harness knows.
type Scenario struct {
	Name    string
	Summary string
	// Quick is true when the scenario is part of a --quick run without
	// naming it.
	Quick bool
}

// Scenarios lists every scenario, in the order a full run takes them.
func Scenarios() []Scenario {
	out := make([]Scenario, len(registry))
	for i, s := range registry {
		out[i] = Scenario{Name: s.name, Summary: s.summary, Quick: s.quick}
	}
	return out
}

// scenario is one thing the harness measures.
type scenario struct {
	name, summary string
	quick         bool
	run           func(ctx context.Context, r *runner) error
}

// registry is the scenarios in run order; tests may add their own.
var registry []scenario

// selectScenarios returns the scenarios names asks for, in registry order,
// or every (quick) one when names is empty.
func selectScenarios(names []string, quick bool) ([]scenario, error) {
	if len(names) == 0 {
		var out []scenario
		for _, s := range registry {
			if s.quick || !quick {
				out = append(out, s)
			}
		}
		return out, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		found := false
		for _, s := range registry {
			if s.name == n {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q; scenarios are %s (kuasar bench --list): %w", n, strings.Join(scenarioNames(), ", "), errdefs.ErrInvalidArgument)
		}
		want[n] = true
	}
	var out []scenario
	for _, s := range registry {
		if want[s.name] {
			out = append(out, s)
		}
	}
	return out, nil
}

func scenarioNames() []string {
	names := make([]string, len(registry))
	for i, s := range registry {
		names[i] = s.name
	}
	return names
}

// reapTimeout bounds how long the harness waits for the processes it kills
// to be gone.
const reapTimeout = 30 * time.Second

// Run runs the selected scenarios and writes the table, the JSON report and
// the plots. An interrupted run (ctx done) still kills everything it started
// and writes what it measured, then returns an error.
func Run(ctx context.Context, o Options) error {
	sel, err := selectScenarios(o.Scenarios, o.Quick)
	if err != nil {
		return err
	}
	if o.Runs < 0 {
		return fmt.Errorf("--runs %d: give a positive number of samples per series: %w", o.Runs, errdefs.ErrInvalidArgument)
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("finding the kuasar executable: %w", err)
		}
	}
	benchDir := filepath.Join(o.StateDir, "bench")
	if err := os.MkdirAll(benchDir, 0o700); err != nil {
		return fmt.Errorf("creating the harness's state directory: %w", err)
	}
	unlock, err := lock(benchDir)
	if err != nil {
		return err
	}
	defer unlock()

	// Orphaned descendants (daemonised shims, VMMs) become our children,
	// so that killing every descendant at the end reaches them.
	if err := reap.BecomeSubreaper(); err != nil {
		fmt.Fprintln(o.Stderr, "kuasar bench: warning:", err)
	}
	scratch, err := os.MkdirTemp("", "kb")
	if err != nil {
		return fmt.Errorf("creating a scratch directory: %w", err)
	}
	rep := &Report{Schema: SchemaVersion, Command: reproduce(o, nil), Quick: o.Quick, Started: time.Now().UTC(), Machine: currentMachine()}
	shared := &sharedState{}
	defer func() {
		shared.close()
		if n, err := reap.KillDescendants(reapTimeout); err != nil {
			fmt.Fprintln(o.Stderr, "kuasar bench:", err)
		} else if n > 0 {
			log.G(ctx).Debugf("bench: killed %d leftover processes", n)
		}
		rig.UnmountUnder(scratch)
		os.RemoveAll(scratch)
	}()

	fmt.Fprintf(o.Stderr, "kuasar bench: %d scenario(s): %s; load average %.2f\n", len(sel), strings.Join(namesOf(sel), ", "), rep.Machine.LoadStart[0])
	for _, s := range sel {
		if ctx.Err() != nil {
			break
		}
		res := &ScenarioResult{Name: s.name, Summary: s.summary, Command: reproduce(o, []string{s.name})}
		rep.Scenarios = append(rep.Scenarios, res)
		sdir := filepath.Join(scratch, s.name)
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			return err
		}
		r := &runner{o: o, res: res, dir: sdir, benchDir: benchDir, shared: shared, targets: map[string]float64{},
			progress: newProgress(o.Stderr, s.name)}
		start := time.Now()
		runErr := s.run(ctx, r)
		for _, c := range slices.Backward(r.closers) {
			c()
		}
		res.Seconds = time.Since(start).Seconds()
		res.finish(r.targets)
		if runErr != nil {
			if ctx.Err() != nil {
				runErr = fmt.Errorf("interrupted: %w", ctx.Err())
			}
			res.Error = runErr.Error()
		}
		r.progress.done(res)
	}
	rep.Finished = time.Now().UTC()
	rep.Machine.LoadEnd = loadAverage()
	rep.Interrupted = ctx.Err() != nil
	writeTable(o.Stdout, rep)
	var errs []error
	if o.JSON != "" {
		if err := writeJSONFile(o.JSON, rep); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(o.Stderr, "kuasar bench: every sample in %s\n", o.JSON)
		}
	}
	if o.PlotDir != "" {
		files, err := writePlots(o.PlotDir, rep)
		if err != nil {
			errs = append(errs, err)
		}
		if len(files) > 0 {
			fmt.Fprintf(o.Stderr, "kuasar bench: plots %s\n", strings.Join(files, ", "))
		}
	}
	if rep.Interrupted {
		errs = append(errs, fmt.Errorf("interrupted; every process the harness started was killed: %w", context.Canceled))
	}
	return errors.Join(errs...)
}

func namesOf(sel []scenario) []string {
	out := make([]string, len(sel))
	for i, s := range sel {
		out[i] = s.name
	}
	return out
}

// reproduce is the command line that runs the same scenarios with the same
// settings.
func reproduce(o Options, names []string) string {
	if names == nil {
		names = o.Scenarios
	}
	args := append([]string{"kuasar", "bench"}, names...)
	if o.Quick {
		args = append(args, "--quick")
	}
	if o.Runs > 0 {
		args = append(args, fmt.Sprintf("--runs %d", o.Runs))
	}
	return strings.Join(args, " ")
}

func writeJSONFile(path string, rep *Report) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("--json %s: %w", path, err)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("--json %s: %w", path, err)
	}
	return f.Close()
}

// sharedState holds what several scenarios of one run use, started once
// (containerd with images imported).
type sharedState struct {
	closers []func()
	values  map[string]any
}

func (s *sharedState) close() {
	for _, c := range slices.Backward(s.closers) {
		c()
	}
	s.closers = nil
}
