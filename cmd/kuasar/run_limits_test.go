package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// rssHelperEnv, set in the environment of a re-executed test binary, makes
// TestMain run rssHelper instead of the tests.
const rssHelperEnv = "KUASAR_TEST_PEAK_RSS_HELPER"

// measuredCommand returns a command that runs the kuasar binary with args
// through a re-executed copy of this test binary (rssHelper), and a
// function to call after the command ended that returns kuasar's peak RSS.
//
// Why not the rusage of a plain exec.Command: Go starts children with
// clone(CLONE_VM|CLONE_VFORK), so until its execve the child runs on the
// test process's memory map, and Linux's execve folds that map's high-water
// RSS into the child's maxrss (fs/exec.c exec_mmap, setmax_mm_hiwater_rss).
// The child's ru_maxrss is thus at least the test process's own peak: after
// other tests ran in-process (a full `go test ./cmd/kuasar/`), 136 MiB for
// a kuasar run whose own peak was about 30 MiB. The helper is a fresh
// process whose own peak (the test binary's start-up) is below kuasar's, so
// the maxrss it reads for kuasar is kuasar's.
func measuredCommand(ctx context.Context, t *testing.T, args ...string) (*exec.Cmd, func() uint64) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	cmd := exec.CommandContext(ctx, self, append([]string{binary(t)}, args...)...)
	cmd.Env = append(os.Environ(), rssHelperEnv+"=1", "KUASAR_STATE_DIR="+t.TempDir())
	cmd.ExtraFiles = []*os.File{w} // fd 3: the helper's report
	return cmd, func() uint64 {
		t.Helper()
		w.Close()
		report, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		kib, err := strconv.ParseUint(strings.TrimSpace(string(report)), 10, 64)
		if err != nil {
			t.Fatalf("peak-RSS helper reported %q: %v", report, err)
		}
		return kib << 10
	}
}

// rssHelper runs args as a child on this process's stdio, writes the
// child's peak RSS in KiB (its rusage maxrss) to fd 3 and returns the
// child's exit code (128+signal when a signal ended it). The child is
// killed when the helper dies first.
func rssHelper(args []string) int {
	os.Unsetenv(rssHelperEnv)
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "peak-RSS helper: no command")
		return 126
	}
	runtime.LockOSThread() // Pdeathsig follows the thread that started the child
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			fmt.Fprintln(os.Stderr, "peak-RSS helper:", err)
			return 126
		}
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		fmt.Fprintln(os.Stderr, "peak-RSS helper: no rusage for the child")
		return 126
	}
	report := os.NewFile(3, "peak-rss-report")
	if _, err := fmt.Fprintln(report, ru.Maxrss); err != nil {
		fmt.Fprintln(os.Stderr, "peak-RSS helper:", err)
		return 126
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// peakRSS runs the kuasar binary with args and returns its exit code,
// stdout and peak resident set (measuredCommand).
func peakRSS(t *testing.T, args ...string) (int, string, uint64) {
	t.Helper()
	cmd, rss := measuredCommand(context.Background(), t, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	peak := rss()
	t.Logf("kuasar %s: exit %d, peak RSS %d MiB, stderr %q", strings.Join(args, " "), cmd.ProcessState.ExitCode(), peak>>20, errb.String())
	return cmd.ProcessState.ExitCode(), out.String(), peak
}

// TestRunMemoryBomb: a guest growing its memory until refused is refused at
// its cap (the 512Mi default, or --memory), and the kuasar process's peak
// RSS stays within 1.25 x the cap + 64 MiB: host memory follows the guest's
// memory, with no copy on growth.
func TestRunMemoryBomb(t *testing.T) {
	bomb := fixture(t, "membomb")
	for _, tc := range []struct {
		flags []string
		cap   uint64
	}{
		{nil, defaultMemoryLimit},
		{[]string{"--memory", "96Mi"}, 96 << 20},
		{[]string{"--memory", "48Mi"}, 48 << 20},
	} {
		t.Run(fmt.Sprint(tc.cap>>20, "MiB"), func(t *testing.T) {
			code, out, rss := peakRSS(t, append(append([]string{"run"}, tc.flags...), bomb)...)
			if code != fixtures.MemBombRefusedExit {
				t.Fatalf("exit %d, stdout %q; want %d (grow refused)", code, out, fixtures.MemBombRefusedExit)
			}
			v, _ := strings.CutPrefix(strings.TrimSpace(out), "reached=")
			got, err := strconv.ParseUint(v, 10, 64)
			if err != nil || got > tc.cap || got+1<<20 <= tc.cap {
				t.Errorf("guest reached %q; want within 1 MiB under the cap %d", out, tc.cap)
			}
			if max := tc.cap + tc.cap/4 + 64<<20; rss > max {
				t.Errorf("peak RSS %d MiB > 1.25 x %d MiB + 64 MiB", rss>>20, tc.cap>>20)
			}
		})
	}
}

// TestRunOpenFiles: a guest opening files until refused gets EMFILE at the
// --open-files limit (default 1024), counting stdio and its mount.
func TestRunOpenFiles(t *testing.T) {
	bomb := fixture(t, "fdbomb")
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"default", nil, "opened=1020 errno=EMFILE"},
		{"100", []string{"--open-files", "100"}, "opened=96 errno=EMFILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"run", "--dir", dir + ":/"}, tc.flags...), bomb, "--", "0")
			r := runInProcess(t, t.TempDir(), "", args...)
			if r.code != 0 || strings.TrimSpace(r.stdout) != tc.want {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, tc.want)
			}
		})
	}
	if r := runInProcess(t, t.TempDir(), "", "run", "--open-files", "0", bomb); r.code != exitKuasarError || !strings.Contains(r.stderr, "--open-files") {
		t.Errorf("--open-files 0: exit %d, stderr %q; want %d naming the flag", r.code, r.stderr, exitKuasarError)
	}
	if r := runInProcess(t, t.TempDir(), "", "run", "--memory", "0", bomb); r.code != exitKuasarError || !strings.Contains(r.stderr, "no bound") {
		t.Errorf("--memory 0: exit %d, stderr %q; want %d saying 0 is no bound", r.code, r.stderr, exitKuasarError)
	}
}

// TestRunStdoutFlood: a guest writing endlessly to a stdout nobody reads is
// still stopped by --timeout (a write blocked on the full pipe does not hold
// the run), and kuasar's memory stays bounded meanwhile.
func TestRunStdoutFlood(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // never read: the pipe fills up and the guest blocks
	// A generous deadline: it only catches a hang, not slowness.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, rss := measuredCommand(ctx, t, "run", "--timeout", "1s", fixture(t, "wasi"), "--", "cat")
	zero, err := os.Open("/dev/zero") // endless input for cat
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	cmd.Stdin = zero
	cmd.Stdout = w
	err = cmd.Run()
	w.Close()
	if ctx.Err() != nil {
		t.Fatal("kuasar run --timeout 1s did not stop a guest blocked writing to an unread stdout")
	}
	if code := cmd.ProcessState.ExitCode(); code != 137 {
		t.Fatalf("exit %d (%v); want 137 (stopped by --timeout)", code, err)
	}
	peak := rss()
	var self syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	t.Logf("peak RSS of kuasar run: %d MiB (of this test process, which a plain exec.Command would have counted: %d MiB)", peak>>20, self.Maxrss>>10)
	if peak > 128<<20 {
		t.Errorf("peak RSS %d MiB while flooding stdout; want under 128 MiB", peak>>20)
	}
}

// TestPeakRSSOwnOnly: measuredCommand reports kuasar's own peak RSS, not the
// test process's: with 256 MiB touched here, a plain exec.Command's maxrss
// counts them (the CLONE_VM start, see measuredCommand) while the measured
// `kuasar version` stays far below.
func TestPeakRSSOwnOnly(t *testing.T) {
	bin := binary(t)
	ballast := make([]byte, 256<<20)
	for i := 0; i < len(ballast); i += os.Getpagesize() {
		ballast[i] = 1
	}
	plain := exec.Command(bin, "version")
	plain.Env = append(os.Environ(), "KUASAR_STATE_DIR="+t.TempDir())
	if out, err := plain.CombinedOutput(); err != nil {
		t.Fatalf("kuasar version: %v: %s", err, out)
	}
	inherited := uint64(plain.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) << 10
	code, out, own := peakRSS(t, "version")
	runtime.KeepAlive(ballast)
	if code != 0 {
		t.Fatalf("kuasar version: exit %d, stdout %q", code, out)
	}
	t.Logf("kuasar version: peak RSS %d MiB measured, %d MiB by a plain exec.Command", own>>20, inherited>>20)
	if own == 0 || own >= 128<<20 {
		t.Errorf("measured peak RSS %d MiB; want kuasar's own (under 128 MiB) without the test process's 256 MiB", own>>20)
	}
	if inherited < 256<<20 {
		t.Logf("this kernel did not fold the parent's RSS into the child's maxrss (%d MiB)", inherited>>20)
	}
}
