package vmbackend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/guest"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestRunWorkload runs a busybox container through the backend contract
// the way `kuasar run --isolation vm` does: exit code and both streams
// come back, nothing is left.
func TestRunWorkload(t *testing.T) {
	a, ctx := vmTest(t, 2*time.Minute)
	var stdout, stderr bytes.Buffer
	state := t.TempDir()
	root := busyboxRootfs(t)
	code, err := runWorkload(ctx, qemuConfig(t, a), state, root, "",
		[]string{"/bin/sh", "-c", "uname -r; cat; echo hi; echo e >&2; exit 3"}, []string{"PATH=/bin"},
		strings.NewReader("from-stdin\n"), &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	want := a.KernelRelease + "\nfrom-stdin\nhi\n"
	if stdout.String() != want || stderr.String() != "e\n" {
		t.Errorf("stdout %q stderr %q, want %q and %q", stdout.String(), stderr.String(), want, "e\n")
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state left behind: %v", ents)
	}
	// Teardown must not have reached through the bind mount.
	if _, err := os.Stat(filepath.Join(root, "bin", "busybox")); err != nil {
		t.Errorf("the workload's rootfs was damaged by teardown: %v", err)
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu processes left: %v", got)
	}
}

// TestVMMKilled kills the VMM under a running sandbox: the sandbox must be
// reported exited (137), its mounts removed, and Shutdown must succeed.
func TestVMMKilled(t *testing.T) {
	a, ctx := vmTest(t, 2*time.Minute)
	b := qemuBackend(t, ctx, qemuConfig(t, a))
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "killed"})
	state := sb.StateDir
	defer bi.Shutdown(context.Background())
	// A container whose rootfs is mounted in the shared dir.
	if _, err := bi.Tasks().Create(ctx, createReq("c", bundle(t, busyboxRootfs(t), "/bin/sleep", "60"))); err != nil {
		t.Fatal(err)
	}
	cp := bi.Checkpoint()
	if err := syscall.Kill(int(bi.Pid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	exit, err := bi.Wait(wctx)
	if err != nil {
		t.Fatalf("sandbox not reported exited after the VMM was killed: %v", err)
	}
	if exit.Status != 137 {
		t.Errorf("exit status %d, want 137", exit.Status)
	}
	if got := mountsUnder(state); len(got) != 0 {
		t.Errorf("mounts left after the VMM died: %v", got)
	}
	if _, err := bi.Tasks().State(ctx, stateReq("c")); err == nil {
		t.Error("Task API still answers for a dead VM")
	}
	// Recover after the VMM is gone reports the sandbox exited.
	ri, err := b.Recover(ctx, sb, cp)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := ri.Wait(ctx); err != nil || e.Status != 137 {
		t.Errorf("recovered instance: %+v %v, want exited 137", e, err)
	}
	if err := ri.Shutdown(ctx); err != nil {
		t.Error(err)
	}
	if err := bi.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if socks, _ := filepath.Glob(filepath.Join(state, "vm", "*.sock")); len(socks) != 0 {
		t.Errorf("sockets left: %v", socks)
	}
}

// TestAgentNeverAnswers boots a guest whose /init never serves the agent:
// Start must fail within the timeout, name the console log, and leave no
// process, socket or directory behind.
func TestAgentNeverAnswers(t *testing.T) {
	testenv.RequireRoot(t)
	a := testenv.BusyboxInit(t, "/bin/busybox sleep 3600")
	// The caller's deadline is far beyond the agent timeout: the error
	// must come from the agent timeout (its message, the context still
	// live), which no load can change, unlike a wall time.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := qemuBackend(t, ctx, qemuConfig(t, a), vmbackend.WithAgentTimeout(6*time.Second))
	state := t.TempDir()
	_, err := b.Start(ctx, backend.Sandbox{ID: "mute-agent", StateDir: state})
	if err == nil {
		t.Fatal("Start succeeded with no agent in the guest")
	}
	if ctx.Err() != nil || !strings.Contains(err.Error(), "did not answer within 6s") {
		t.Errorf("error %q (context %v): want the 6 s agent timeout to end Start", err, ctx.Err())
	}
	if !strings.Contains(err.Error(), filepath.Join(state, "vm", "console.log")) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("error %q should name the console log and be Unavailable", err)
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu left running: %v", got)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state left: %v", ents)
	}
}

// TestMissingArtifacts checks that a missing kernel, initramfs or binary
// fails before anything starts, naming the config key to set.
func TestMissingArtifacts(t *testing.T) {
	good := vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true"}
	for _, tc := range []struct {
		name string
		edit func(*vm.Config)
		key  string
	}{
		{"binary", func(c *vm.Config) { c.Path = "/nonexistent/qemu" }, `"path"`},
		{"kernel", func(c *vm.Config) { c.Kernel = "/nonexistent/vmlinux" }, `"kernel"`},
		{"initramfs", func(c *vm.Config) { c.Initramfs = "" }, `"initramfs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			b, _ := vmbackend.New(context.Background(), vmbackend.WithHypervisor(vm.QEMU, c))
			state := t.TempDir()
			_, err := b.Start(context.Background(), backend.Sandbox{ID: "x", StateDir: state})
			if err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "[hypervisor.qemu]") || !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("error %v: want FailedPrecondition naming %s in [hypervisor.qemu]", err, tc.key)
			}
			if ents, _ := os.ReadDir(state); len(ents) != 0 {
				t.Errorf("state left: %v", ents)
			}
		})
	}
	// An unconfigured hypervisor names its section.
	b, _ := vmbackend.New(context.Background(), vmbackend.WithHypervisor(vm.QEMU, good))
	_, err := b.Start(context.Background(), backend.Sandbox{ID: "x", StateDir: t.TempDir(), Hypervisor: vm.CloudHypervisor})
	if err == nil || !strings.Contains(err.Error(), "[hypervisor.cloud-hypervisor]") {
		t.Fatalf("error %v: want one naming [hypervisor.cloud-hypervisor]", err)
	}
}

// TestRecoverLiveVM detaches from a running sandbox (as a sandboxer
// restart would) and recovers it from its checkpoint: the VM is re-attached
// (same QEMU), and the container started before the restart is killed and
// removed from the guest and the shared directory, since containerd counted
// it exited when the Task API connection closed (RATIONALE.md, "After a
// crash"); the sandbox then runs new containers. Before, the container ran
// on in the guest, invisible to containerd, and Metrics counted 0 tasks.
func TestRecoverLiveVM(t *testing.T) {
	a, ctx := vmTest(t, 2*time.Minute)
	b := qemuBackend(t, ctx, qemuConfig(t, a))
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "recover"})
	state := sb.StateDir
	pid := bi.Pid()
	startContainer(t, ctx, bi, "c", bundle(t, busyboxRootfs(t), "/bin/sleep", "60"))
	cp := bi.Checkpoint()
	if !bi.(*vmbackend.Instance).Detach() {
		t.Fatal("QEMU instance cannot detach")
	}
	b2 := qemuBackend(t, ctx, qemuConfig(t, a))
	rt0 := time.Now()
	ri, err := b2.Recover(ctx, sb, cp)
	t.Logf("recover took %v", time.Since(rt0))
	if err != nil {
		t.Fatal(err)
	}
	defer ri.Shutdown(context.Background())
	if ri.Pid() != pid {
		t.Fatalf("recovered pid %d, want %d", ri.Pid(), pid)
	}
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := ri.Wait(wctx); err == nil {
		t.Fatal("recovered live sandbox reported exited")
	}
	wcancel()
	if _, err := ri.Tasks().State(ctx, stateReq("c")); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("State of the container started before the restart: %v; want NotFound (killed and deleted in the guest)", err)
	}
	if got := mountsUnder(filepath.Join(state, "shared", "c")); len(got) != 0 {
		t.Errorf("mounts of the lost container left: %v", got)
	}
	if _, err := os.Lstat(filepath.Join(state, "shared", "c")); !os.IsNotExist(err) {
		t.Errorf("bundle of the lost container left: %v", err)
	}
	if m, err := ri.Metrics(ctx); err != nil || m.Tasks != 0 {
		t.Errorf("Metrics after recover: %+v %v; want 0 tasks", m, err)
	}
	// The re-attached sandbox runs containers.
	startContainer(t, ctx, ri, "d", bundle(t, busyboxRootfs(t), "/bin/sleep", "60"))
	if m, err := ri.Metrics(ctx); err != nil || m.Tasks != 1 {
		t.Errorf("Metrics with one container: %+v %v; want 1 task", m, err)
	}
	if err := ri.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := qemuPids(sb.StateDir); len(got) != 0 {
		t.Errorf("qemu left: %v", got)
	}
}

// TestQ35 boots the PCI machine type (virtio-serial-pci, the virtio_pci
// module) and runs a container through the backend contract in rootfs_mode block,
// so both PCI storage devices are used: virtio-blk-pci for the rootfs
// image, virtio-9p-pci for the bundle.
func TestQ35(t *testing.T) {
	testenv.RequireRoot(t)
	a := testenv.Build(t, guest.Options{Modules: append(append([]string{}, guest.DefaultModules...), "virtio_pci")})
	cfg := qemuConfig(t, a)
	cfg.Machine = "q35"
	cfg.RootfsMode = vm.ShareBlock
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := busyboxRootfs(t)
	if err := os.WriteFile(filepath.Join(root, "etc", "marker"), []byte("q35\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := runWorkload(ctx, cfg, t.TempDir(), root, "",
		[]string{"/bin/sh", "-c", "uname -r; cat /etc/marker; echo w > /x && cat /x; exit 5"}, []string{"PATH=/bin"}, nil, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
	if want := a.KernelRelease + "\nq35\nw\n"; out.String() != want {
		t.Errorf("output %q, want %q (guest kernel release, the image's marker, the overlay write)", out.String(), want)
	}
	if _, err := os.Stat(filepath.Join(root, "x")); err == nil {
		t.Error("a write in the container reached the host rootfs")
	}
}
