package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// TestRunVMKilledIsReaped: a `kuasar run --isolation vm` SIGKILLed while
// its container runs leaves its QEMU running (reparented to init) and its
// state under $KUASAR_STATE_DIR/run; the next run finds the dead run by
// its owner record, kills the QEMU (through its mark), detaches the mounts
// and removes the files, and nothing of the first run is left. Before,
// the QEMU ran on and the directory stayed for good.
func TestRunVMKilledIsReaped(t *testing.T) {
	archive := busyboxVMArchive(t, "docker.io/library/busybox-vmcrash:test", ocispec.ImageConfig{}, "sh", "echo", "sleep")
	bin := binary(t)
	state := t.TempDir()
	runs := filepath.Join(state, "run")

	// The first run: killed once its container printed "up".
	cmd := exec.Command(bin, "run", "--isolation", "vm", "--vm-template", "off", archive, "--", "echo up; sleep 600")
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+state)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "up" {
				up <- true
				return
			}
		}
		up <- false
	}()
	select {
	case ok := <-up:
		if !ok {
			cmd.Wait()
			t.Fatalf("the first run ended before its container printed up: %s", stderr.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the first run's container printed nothing within 3 minutes: %s", stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	left := runDirs(t, runs)
	vmms, _ := procmark.Scan(state)
	t.Cleanup(func() {
		for _, p := range vmms {
			procmark.Kill(p)
		}
	})
	if len(left) != 1 || len(vmms) == 0 {
		t.Fatalf("after the SIGKILL: run directories %v, marked processes %v; want the dead run's directory and its QEMU", left, vmms)
	}

	// The second run reaps the first.
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, stateDir: state}
	if code := runCLI(context.Background(), env, []string{"run", "--isolation", "vm", "--vm-template", "off", archive, "--", "echo again"}); code != 0 || out.String() != "again\n" {
		t.Fatalf("second run: exit %d, stdout %q, stderr %s", code, out.String(), errb.String())
	}
	assertDeadRunReaped(t, state, runs, vmms)
}

// runDirs lists the run directories in dir.
func runDirs(t *testing.T, dir string) []string {
	t.Helper()
	d, _ := filepath.Glob(filepath.Join(dir, runPrefix+"*"))
	return d
}

// exitedOrGone reports whether p has exited (a zombie waiting for init
// has) or its pid names another process.
func exitedOrGone(p procmark.Proc) bool {
	if !procmark.Alive(p) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z") || strings.HasPrefix(rest, "X")
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestRunVMKilledWhileSealingIsReaped: a `kuasar run --isolation vm`
// SIGKILLed after its clone's QEMU started but before the template's
// memory copy was known to be complete and sealed (QEMU starts while the
// copy runs, Template.MemoryEarly) leaves that QEMU and its directory;
// the next run reaps both, restores from the same template and runs.
func TestRunVMKilledWhileSealingIsReaped(t *testing.T) {
	archive := busyboxVMArchive(t, "docker.io/library/busybox-vmseal:test", ocispec.ImageConfig{}, "sh", "echo")
	bin := binary(t)
	// Short: the template builder's sockets live below it.
	state, err := os.MkdirTemp("", "kvs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	runs := filepath.Join(state, "run")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, stateDir: state}
		return runCLI(context.Background(), env, args), out.String(), errb.String()
	}
	t.Cleanup(func() { run("vm-templates", "rm") })
	// The first run builds the template.
	if code, out, errs := run("run", "--isolation", "vm", archive, "--", "echo built"); code != 0 || out != "built\n" {
		t.Fatalf("first run: exit %d, stdout %q, stderr %s", code, out, errs)
	}

	// The second is killed at the seal, its QEMU started.
	cmd := exec.Command(bin, "run", "--isolation", "vm", "docker.io/library/busybox-vmseal:test", "--", "echo never")
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+state, crashpoint.Env+"=vm.template-sealing")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the run was not killed at the seal: %v: %s", err, out)
	}
	left := runDirs(t, runs)
	vmms, _ := procmark.Scan(state)
	t.Cleanup(func() {
		for _, p := range vmms {
			procmark.Kill(p)
		}
	})
	if len(left) != 1 || len(vmms) == 0 {
		t.Fatalf("after the SIGKILL: run directories %v, marked processes %v; want the dead run's directory and its QEMU", left, vmms)
	}

	// The third reaps the second and restores from the same template.
	if code, out, errs := run("run", "--isolation", "vm", "docker.io/library/busybox-vmseal:test", "--", "echo again"); code != 0 || out != "again\n" {
		t.Fatalf("third run: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	assertDeadRunReaped(t, state, runs, vmms)
}

// assertDeadRunReaped checks that nothing of a killed run is left once the
// next run has reaped it: none of its processes vmms, no marked process,
// run directory or mount under the state directory.
func assertDeadRunReaped(t *testing.T, state, runs string, vmms []procmark.Proc) {
	t.Helper()
	for _, p := range vmms {
		if !exitedOrGone(p) {
			t.Errorf("the dead run's process %d still runs", p.Pid)
		}
	}
	if now, _ := procmark.Scan(state); len(now) != 0 {
		t.Errorf("marked processes left: %v", now)
	}
	if d := runDirs(t, runs); len(d) != 0 {
		t.Errorf("run directories left: %v", d)
	}
	if ms := mountsUnder(t, state); len(ms) != 0 {
		t.Errorf("mounts left under the state directory: %v", ms)
	}
}
