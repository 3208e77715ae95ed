package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// peakRSS runs the kuasar binary with args and returns its exit code,
// stdout and peak resident set (the child's rusage maxrss).
func peakRSS(t *testing.T, args ...string) (int, string, uint64) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+t.TempDir())
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no rusage for the child")
	}
	t.Logf("kuasar %s: exit %d, peak RSS %d MiB, stderr %q", strings.Join(args, " "), cmd.ProcessState.ExitCode(), ru.Maxrss>>10, errb.String())
	return cmd.ProcessState.ExitCode(), out.String(), uint64(ru.Maxrss) << 10
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
	cmd := exec.CommandContext(ctx, binary(t), "run", "--timeout", "1s", fixture(t, "wasi"), "--", "cat")
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+t.TempDir())
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
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	t.Logf("peak RSS of kuasar run: %d MiB", ru.Maxrss>>10)
	if rss := uint64(ru.Maxrss) << 10; rss > 128<<20 {
		t.Errorf("peak RSS %d MiB while flooding stdout; want under 128 MiB", rss>>20)
	}
}
