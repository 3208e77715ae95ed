package vmbackend_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/fifo"
	"github.com/moby/sys/mountinfo"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/guest"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// vmTest starts a test that boots the real guest: it needs root, builds
// (or reuses) the guest and bounds the test by timeout.
func vmTest(t *testing.T, timeout time.Duration) (guest.Artifacts, context.Context) {
	t.Helper()
	testenv.RequireRoot(t)
	a := agentGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return a, ctx
}

// qemuBackend is a VM backend whose QEMU runs cfg, with opts.
func qemuBackend(t testing.TB, ctx context.Context, cfg vm.Config, opts ...vmbackend.Option) *vmbackend.Backend {
	t.Helper()
	b, err := vmbackend.New(ctx, append([]vmbackend.Option{vmbackend.WithHypervisor(vm.QEMU, cfg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	// The templates' memory lives on /dev/shm, outside the test's
	// temporary directories: remove it with them (the sweep of the next
	// store that opens would, but not before).
	t.Cleanup(func() {
		if err := b.RemoveTemplates(context.Background()); err != nil {
			t.Errorf("remove the test's VM templates: %v", err)
		}
	})
	return b
}

// startSandbox starts sb in b with a fresh state directory, set in the
// returned copy of sb. Shutting it down is the caller's.
func startSandbox(t testing.TB, ctx context.Context, b *vmbackend.Backend, sb backend.Sandbox) (backend.Instance, backend.Sandbox) {
	t.Helper()
	sb.StateDir = t.TempDir()
	bi, err := b.Start(ctx, sb)
	if err != nil {
		t.Fatal(err)
	}
	return bi, sb
}

// startContainer creates container id from bundle bd in bi and starts it.
func startContainer(t testing.TB, ctx context.Context, bi backend.Instance, id, bd string) {
	t.Helper()
	if _, err := bi.Tasks().Create(ctx, createReq(id, bd)); err != nil {
		t.Fatal(err)
	}
	if _, err := bi.Tasks().Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
}

// agentGuest builds (cached) the real guest: Debian kernel + kuasar-task.
func agentGuest(t testing.TB) guest.Artifacts {
	t.Helper()
	return testenv.Build(t, guest.Options{})
}

func qemuConfig(t testing.TB, a guest.Artifacts) vm.Config {
	return vm.Config{
		Path: testenv.QEMU(t), Kernel: a.Kernel, Initramfs: a.Initramfs,
		Debug: os.Getenv("KUASAR_VM_DEBUG") != "",
	}
}

// busyboxRootfs makes a container rootfs holding Debian's static busybox
// and applet links.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static missing (apt-get install busybox-static; run make deps): %v", err)
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "proc", "dev", "tmp", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "uname", "echo", "hostname", "sleep", "cat", "ls", "true"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	return root
}

// bundle writes a runtime-spec bundle whose rootfs is bound from root.
func bundle(t testing.TB, root string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	spec := `{"ociVersion":"1.2.0","process":{"args":` + jsonStrings(args) + `,"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"` + root + `"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func jsonStrings(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, strconv.Quote(s))
	}
	return "[" + strings.Join(q, ",") + "]"
}

// fifoReader creates a FIFO at path and collects what is written to it
// (as containerd does for a task's stdout).
type fifoReader struct {
	path string
	buf  bytes.Buffer
	wg   sync.WaitGroup
}

func newFifoReader(t testing.TB, path string) *fifoReader {
	t.Helper()
	r := &fifoReader{path: path}
	f, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		io.Copy(&r.buf, f)
		f.Close()
	}()
	return r
}

func (r *fifoReader) String() string { r.wg.Wait(); return r.buf.String() }

// qemuPids lists the running qemu-system processes owned by this test's
// state directory dir: those whose procmark mark (set by vm/internal/vmm on
// every VMM it starts, kept through the jail's re-exec) is dir or below it.
// It never sees another test's QEMU, not even one of a test binary of
// another package running at the same time with the same sandbox ID or run
// directory prefix, which matching command lines by a name did.
func qemuPids(dir string) []int {
	procs, err := procmark.Scan(dir)
	if err != nil {
		panic(err)
	}
	var pids []int
	for _, p := range procs {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/cmdline")
		if bytes.Contains(b, []byte("qemu-system")) {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(dir string) []string {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		panic(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Mountpoint)
	}
	return out
}

func anySpec(js string) *anypb.Any {
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(js)}
}

func createReq(id, bundle string) *taskAPI.CreateTaskRequest {
	return &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle}
}

func stateReq(id string) *taskAPI.StateRequest { return &taskAPI.StateRequest{ID: id} }
