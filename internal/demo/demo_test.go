package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/stack"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containerd, crictl and QEMU; -short runs unit tests only")
	}
	if os.Geteuid() != 0 {
		t.Skip("the demo needs root")
	}
}

// build builds the named commands into a temporary directory.
func build(t *testing.T, cmds ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, c := range cmds {
		args = append(args, "./cmd/"+c)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// checkNothingLeft fails t if any process, mount or file of the stack in
// dir remains (its sockets were files under dir).
func checkNothingLeft(t *testing.T, dir string) {
	t.Helper()
	if !strings.HasPrefix(dir, os.TempDir()+"/kuasar-stack-") {
		t.Fatalf("stack directory %q is not where the demo puts it", dir)
	}
	if socks := boundSockets(dir); len(socks) != 0 {
		t.Errorf("unix sockets still bound under %s: %v", dir, socks)
	}
	if ps := stack.ProcessesUnder(dir); len(ps) != 0 {
		t.Errorf("processes of the stack left: %v", ps)
	}
	if _, err := os.Stat(templateMemDir(filepath.Join(dir, "k"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VM template memory %s left (%v)", templateMemDir(filepath.Join(dir, "k")), err)
	}
	if ms := stack.MountsUnder(dir); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (%v)", dir, err)
	}
}

// TestDemo runs the demo as `make demo` does and checks what it prints:
// both pods' output and exit codes, timings, and that the clean-up
// reports nothing left; then that nothing is left indeed.
func TestDemo(t *testing.T) {
	requireRoot(t)
	bin := build(t, "kuasar-sandboxer", "containerd-shim-kuasar-v1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := Run(ctx, Options{Out: &out, Stack: stack.Options{BinDir: bin}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.Pods) != 2 || rep.Pods[0].Kind != "wasm" || rep.Pods[1].Kind != "vm" {
		t.Fatalf("pods %+v, want a wasm then a vm pod\n%s", rep.Pods, out.String())
	}
	for _, p := range rep.Pods {
		if p.ExitCode != 0 || p.RunPodSandbox <= 0 || p.StartToExit <= 0 || p.Total < p.RunPodSandbox+p.StartToExit {
			t.Errorf("%s pod: %+v", p.Kind, p.PodResult)
		}
	}
	text := out.String()
	for _, re := range []string{
		`(?m)^WASM pod: runtime handler "kuasar"`,
		`(?m)^    \| hello from wasm$`,
		`(?m)^    \| argv\[1\]=from$`,
		`(?m)^VM pod: runtime handler "kuasar-vm"`,
		`(?m)^    \| hello from a VM pod$`,
		`(?m)^    \| guest kernel: Linux \S+$`,
		`(?m)^  timings: runp \S+, create \S+, start to exit \S+, remove \S+; total \S+$`,
		`(?m)^  done in \S+: nothing left$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	if n := strings.Count(text, "\n  exit code 0\n"); n != 2 {
		t.Errorf("%d exit codes 0 printed, want 2:\n%s", n, text)
	}
	checkNothingLeft(t, rep.Dir)
}

// demoProcess is a `kuasar demo` child in a process group of its own.
type demoProcess struct {
	cmd  *exec.Cmd
	dir  string
	done chan error
	mu   sync.Mutex
	out  strings.Builder
	errb bytes.Buffer
}

func (d *demoProcess) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String() + d.errb.String()
}

// startDemoUntilQEMU runs `kuasar demo` from bin and returns once the VM
// pod's QEMU runs (polled, with deadlines), with the stack's directory.
func startDemoUntilQEMU(t *testing.T, bin string) *demoProcess {
	t.Helper()
	d := &demoProcess{cmd: exec.Command(filepath.Join(bin, "kuasar"), "demo"), done: make(chan error, 1)}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.errb
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL) })
	dirc := make(chan string, 1)
	vmc := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		dirRE := regexp.MustCompile(`everything under (\S+):$`)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.out.WriteString(line + "\n")
			d.mu.Unlock()
			if m := dirRE.FindStringSubmatch(line); m != nil {
				dirc <- m[1]
			}
			if strings.HasPrefix(line, "VM pod:") {
				close(vmc)
			}
		}
		d.done <- d.cmd.Wait()
	}()
	select {
	case d.dir = <-dirc:
	case err := <-d.done:
		t.Fatalf("demo ended before starting its stack: %v\n%s", err, d.output())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no stack directory printed after 2 min\n%s", d.output())
	}
	select {
	case <-vmc:
	case err := <-d.done:
		t.Fatalf("demo ended before its VM pod: %v\n%s", err, d.output())
	case <-time.After(5 * time.Minute):
		t.Fatalf("no VM pod after 5 min\n%s", d.output())
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !qemuRuns(d.dir) {
		if time.Now().After(deadline) {
			t.Fatalf("no QEMU under %s after 3 min\n%s", d.dir, d.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// wait waits for the demo to exit, failing t after timeout.
func (d *demoProcess) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-d.done:
		return err
	case <-time.After(timeout):
		t.Fatalf("demo still runs after %v\n%s", timeout, d.output())
		return nil
	}
}

// TestDemoInterrupted runs `kuasar demo` as a user does and interrupts it
// as a terminal's ^C does (SIGINT to its whole process group) while the VM
// pod's QEMU runs: it must exit 130 after removing the pods, the daemons,
// QEMU, mounts and the directory.
func TestDemoInterrupted(t *testing.T) {
	requireRoot(t)
	bin := build(t, "kuasar", "kuasar-sandboxer", "containerd-shim-kuasar-v1")
	d := startDemoUntilQEMU(t, bin)
	if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := d.wait(t, 3*time.Minute)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit %v, want code 130\n%s", err, d.output())
	}
	for _, want := range []string{"interrupted", "nothing left"} {
		if !strings.Contains(d.output(), want) {
			t.Errorf("output lacks %q:\n%s", want, d.output())
		}
	}
	checkNothingLeft(t, d.dir)
}

// TestDemoKilled SIGKILLs `kuasar demo` while its VM pod's QEMU runs: it
// cannot clean up, its daemons die with it (PR_SET_PDEATHSIG), and the
// next stack started removes what is left (the QEMU, mounts, files) since
// the stack's owner is gone.
func TestDemoKilled(t *testing.T) {
	requireRoot(t)
	bin := build(t, "kuasar", "kuasar-sandboxer", "containerd-shim-kuasar-v1")
	d := startDemoUntilQEMU(t, bin)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.wait(t, time.Minute)
	if _, err := os.Stat(d.dir); err != nil {
		t.Fatalf("the killed demo's directory is gone already (%v): nothing to test", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if _, err := Run(ctx, Options{Out: &out, NoVM: true, Stack: stack.Options{BinDir: bin}}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkNothingLeft(t, d.dir)
}

// qemuRuns reports whether a QEMU of the stack in dir runs.
func qemuRuns(dir string) bool {
	for _, p := range stack.ProcessesUnder(dir) {
		if b, err := os.ReadFile("/proc/" + itoa(p.Pid) + "/cmdline"); err == nil && bytes.Contains(b, []byte("qemu")) {
			return true
		}
	}
	return false
}

func itoa(i int) string { return strconv.Itoa(i) }

// templateMemDir is where the VM backend keeps the memory files of the
// templates of a sandboxer whose state directory is state, as
// vmbackend.WithTemplateDir lays it out: on /dev/shm, outside the stack.
func templateMemDir(state string) string {
	h := sha256.Sum256([]byte(filepath.Join(state, "vm-templates")))
	return filepath.Join("/dev/shm", "kuasar-vm-templates", hex.EncodeToString(h[:8]))
}

// boundSockets lists the unix sockets bound under dir that some process
// still holds (/proc/net/unix keeps a socket's path after its file is
// removed).
func boundSockets(dir string) []string {
	b, _ := os.ReadFile("/proc/net/unix")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[7], dir+"/") {
			out = append(out, f[7])
		}
	}
	return out
}
