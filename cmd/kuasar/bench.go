package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"
)

func init() {
	register("bench", "Measure kuasar beside runc and other baselines: table, JSON, SVG plots", runBench)
}

// benchHelper is the harness's binary, built beside kuasar by make build:
// the harness links the CRI API, containerd's Sandbox and Task API clients
// and gRPC's client stack, whose package initialisation every fresh kuasar
// process would otherwise pay (see RATIONALE.md, "kuasar bench in its own
// binary").
const benchHelper = "kuasar-bench"

// findBenchHelper returns the harness's binary: next to this executable,
// else on $PATH. A variable so that tests can point it at a fresh build.
var findBenchHelper = func() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the kuasar executable: %w", err)
	}
	next := filepath.Join(filepath.Dir(self), benchHelper)
	if fi, err := os.Stat(next); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return next, nil
	}
	if p, err := exec.LookPath(benchHelper); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s, the benchmark harness, is neither next to %s nor on $PATH: run make build (or make install): %w", benchHelper, self, errdefs.ErrNotFound)
}

// runBench runs the harness's binary with the same arguments and streams,
// kuasar's state directory and this executable, forwards SIGINT/SIGTERM (as
// an interrupt, so that the harness stops what it started) and returns its
// exit code.
func runBench(ctx context.Context, env *cliEnv, args []string) int {
	helper, err := findBenchHelper()
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar bench: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(env.stderr, "kuasar bench: finding the kuasar executable: %v\n", err)
		return 1
	}
	cmd := exec.CommandContext(ctx, helper, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.stdin, env.stdout, env.stderr
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+env.stateDir, "KUASAR_BENCH_KUASAR="+self)
	// The harness cleans up on an interrupt; kuasar waits for it. If kuasar
	// dies first, the kernel interrupts the harness.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	if err := cmd.Run(); cmd.ProcessState == nil {
		fmt.Fprintf(env.stderr, "kuasar bench: running %s: %v\n", helper, err)
		return 1
	}
	// The harness's own exit code, also after an interrupt; killed by a
	// signal: 128+N, as a shell reports it.
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}
