package vmbackend_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestEndToEnd boots a real QEMU VM with the Debian kernel and the
// kuasar-task agent, runs busybox containers through the Task API
// forwarder with FIFO stdio (as containerd would), execs, stops, and
// checks that nothing is left behind.
func TestEndToEnd(t *testing.T) {
	a, ctx := vmTest(t, 3*time.Minute)
	b := qemuBackend(t, ctx, qemuConfig(t, a))
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "e2e-sandbox-0123456789", Hostname: "kuasar-e2e"})
	state := sb.StateDir
	inst := bi.(*vmbackend.Instance)
	defer inst.Shutdown(context.Background())
	t.Logf("timings: %+v", inst.Timings())

	// The guest runs its own kernel: Ping's release is the guest kernel's.
	var host unix.Utsname
	unix.Uname(&host)
	hostRel := unix.ByteSliceToString(host.Release[:])
	if got := inst.GuestKernelRelease(); got != a.KernelRelease {
		t.Fatalf("guest kernel release %q, want %q (the guest kernel we built)", got, a.KernelRelease)
	}
	if hostRel == a.KernelRelease {
		t.Logf("host runs the same kernel release %s: relying on the hostname check below", hostRel)
	}
	pid := int(inst.Pid())
	if pid == 0 || len(qemuPids(sb.StateDir)) != 1 {
		t.Fatalf("VMM pid %d, qemu processes for the sandbox: %v", pid, qemuPids(sb.StateDir))
	}

	tasks := inst.Tasks()
	root := busyboxRootfs(t)
	fifos := t.TempDir()

	// Container 1: output on both streams and exit code 3.
	out := newFifoReader(t, filepath.Join(fifos, "c1-out"))
	errs := newFifoReader(t, filepath.Join(fifos, "c1-err"))
	bd := bundle(t, root, "/bin/sh", "-c", "uname -r; hostname; echo hi; echo oops >&2; exit 3")
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bd, Stdout: out.path, Stderr: errs.path}); err != nil {
		t.Fatalf("create: %v (console log %s)", err, inst.ConsoleLog())
	}
	if got := mountsUnder(filepath.Join(state, "shared", "c1")); len(got) != 1 {
		t.Fatalf("rootfs mounts in the shared dir: %v, want 1", got)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if w.ExitStatus != 3 {
		t.Errorf("exit status %d, want 3", w.ExitStatus)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || lines[0] != a.KernelRelease || lines[2] != "hi" {
		t.Errorf("stdout %q, want [%s <hostname> hi]", lines, a.KernelRelease)
	}
	if hn, _ := os.Hostname(); len(lines) > 1 && (lines[1] == hn || lines[1] != sb.Hostname) {
		t.Errorf("container hostname %q, want the sandbox's %q (host: %q)", lines[1], sb.Hostname, hn)
	}
	if hostRel != a.KernelRelease && lines[0] == hostRel {
		t.Errorf("container sees the host kernel %s", hostRel)
	}
	if got := strings.TrimSpace(errs.String()); got != "oops" {
		t.Errorf("stderr %q, want oops", got)
	}
	if got := mountsUnder(filepath.Join(state, "shared", "c1")); len(got) != 0 {
		t.Errorf("mounts left after Delete: %v", got)
	}
	if _, err := os.Stat(filepath.Join(state, "shared", "c1")); !os.IsNotExist(err) {
		t.Errorf("bundle left after Delete: %v", err)
	}

	// Container 2: long-running, with an exec.
	bd2 := bundle(t, root, "/bin/sleep", "60")
	startContainer(t, ctx, inst, "c2", bd2)
	eout := newFifoReader(t, filepath.Join(fifos, "e1-out"))
	spec := `{"args":["/bin/sh","-c","echo exec-ok; exit 7"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}`
	if _, err := tasks.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Stdout: eout.path, Spec: anySpec(spec)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	ew, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	if ew.ExitStatus != 7 || strings.TrimSpace(eout.String()) != "exec-ok" {
		t.Errorf("exec: status %d output %q, want 7 exec-ok", ew.ExitStatus, eout.String())
	}
	m, err := inst.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.MemoryBytes < 32<<20 || m.CPUNanos == 0 || m.Tasks == 0 {
		t.Errorf("metrics %+v: want VMM RSS > 32 MiB, CPU > 0, tasks > 0", m)
	}
	// Each figure is the VMM's own, split as its name says: QEMU's guest
	// RAM is private anonymous memory (9p needs no shared memory), and a
	// VMM emulating a guest under TCG spends user time.
	if m.AnonBytes+m.FileBytes+m.ShmemBytes != m.MemoryBytes || m.AnonBytes < 16<<20 || m.FileBytes == 0 {
		t.Errorf("metrics %+v: want anon (> 16 MiB) + file (> 0) + shmem = the resident set", m)
	}
	if m.UserNanos+m.SystemNanos != m.CPUNanos || m.UserNanos == 0 {
		t.Errorf("metrics %+v: want user (> 0) + system = CPU", m)
	}
	t.Logf("metrics: %+v", m)

	if st, err := tasks.State(ctx, &taskAPI.StateRequest{ID: "c2"}); err != nil || st.Bundle != bd2 {
		t.Errorf("State bundle %q %v, want the host bundle %s", st.GetBundle(), err, bd2)
	}
	if fi, err := os.Stat(filepath.Join(state, "vm", "qmp.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("qmp.sock mode: %v %v, want 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(state, "vm", "agent.sock")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("agent.sock mode: %v %v, want 0600", fi, err)
	}

	// Stop with a container still running (sleep is PID 1 of its pid
	// namespace and ignores SIGTERM, so Stop's SIGKILL after the timeout
	// ends it): the VM, mounts and sockets must all go.
	if err := inst.Stop(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("VMM %d still alive after Shutdown", pid)
	}
	if got := qemuPids(sb.StateDir); len(got) != 0 {
		t.Errorf("qemu processes left: %v", got)
	}
	if got := mountsUnder(state); len(got) != 0 {
		t.Errorf("mounts left: %v", got)
	}
	socks, _ := filepath.Glob(filepath.Join(state, "vm", "*.sock"))
	if len(socks) != 0 {
		t.Errorf("sockets left: %v", socks)
	}
}
