package vmbackend_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// templateBackend is a QEMU backend keeping its templates in a fresh
// directory, which the test removes with the templates' memory files.
func templateBackend(t testing.TB, ctx context.Context, cfg vm.Config) *vmbackend.Backend {
	t.Helper()
	b := qemuBackend(t, ctx, cfg, vmbackend.WithTemplateDir(filepath.Join(t.TempDir(), "templates")))
	t.Cleanup(func() {
		if err := b.RemoveTemplates(context.Background()); err != nil {
			t.Error(err)
		}
		if d := vmbackend.TemplateMemDir(b); d != "" {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("template memory directory %s left: %v", d, err)
			}
		}
	})
	return b
}

// templateRootfs is busyboxRootfs with the applets the template tests use.
func templateRootfs(t testing.TB) string {
	root := busyboxRootfs(t)
	for _, a := range []string{"date", "head", "od"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	return root
}

// run runs args as container id in bi and returns its stdout and exit status.
func run(t testing.TB, ctx context.Context, bi backend.Instance, id, root string, args ...string) (string, uint32) {
	t.Helper()
	out := newFifoReader(t, filepath.Join(t.TempDir(), "out"))
	tasks := bi.Tasks()
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle(t, root, args...), Stdout: out.path}); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	return out.String(), w.ExitStatus
}

// shutdownClean shuts bi down and checks nothing of it is left: no QEMU,
// no mount, no socket, no shared directory.
func shutdownClean(t *testing.T, bi backend.Instance, sb backend.Sandbox) {
	t.Helper()
	if err := bi.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pids := qemuPids(sb.StateDir); len(pids) != 0 {
		t.Errorf("qemu left for %s: %v", sb.ID, pids)
	}
	if m := mountsUnder(sb.StateDir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if socks, _ := filepath.Glob(filepath.Join(sb.StateDir, "vm", "*.sock")); len(socks) != 0 {
		t.Errorf("sockets left: %v", socks)
	}
	if _, err := os.Stat(filepath.Join(sb.StateDir, "shared")); !os.IsNotExist(err) {
		t.Errorf("shared directory left: %v", err)
	}
}

// TestTemplateRestore: the first sandbox builds the template and is
// restored from it; its container runs busybox with the right output and
// exit code, an exec works, and removing it leaves nothing. Then three
// sandboxes are restored at once; each reads its own random bytes and the
// host's time, not the template's.
func TestTemplateRestore(t *testing.T) {
	a, ctx := vmTest(t, 5*time.Minute)
	b := templateBackend(t, ctx, qemuConfig(t, a))
	root := templateRootfs(t)

	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "tpl-first", Hostname: "tpl-first"})
	t.Cleanup(func() { bi.Shutdown(context.Background()) })
	inst := bi.(*vmbackend.Instance)
	if !inst.FromTemplate() {
		t.Fatalf("first sandbox booted cold; console %s", inst.ConsoleLog())
	}
	if n := len(b.Templates()); n != 1 {
		t.Fatalf("%d templates after the first start, want 1", n)
	}
	out, code := run(t, ctx, bi, "c1", root, "/bin/sh", "-c", "hostname; echo hi; exit 3")
	if code != 3 || out != "tpl-first\nhi\n" {
		t.Fatalf("container: status %d output %q, want 3 %q", code, out, "tpl-first\nhi\n")
	}
	startContainer(t, ctx, bi, "c2", bundle(t, root, "/bin/sleep", "60"))
	eout := newFifoReader(t, filepath.Join(t.TempDir(), "e1"))
	spec := `{"args":["/bin/sh","-c","echo exec-ok; exit 7"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}`
	if _, err := bi.Tasks().Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Stdout: eout.path, Spec: anySpec(spec)}); err != nil {
		t.Fatal(err)
	}
	if _, err := bi.Tasks().Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if w, err := bi.Tasks().Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"}); err != nil || w.ExitStatus != 7 || eout.String() != "exec-ok\n" {
		t.Fatalf("exec: %v status %d output %q", err, w.GetExitStatus(), eout.String())
	}
	shutdownClean(t, bi, sb)

	// Three at once, all from the one template.
	type clone struct {
		bi  backend.Instance
		sb  backend.Sandbox
		err error
	}
	clones := make([]clone, 3)
	var wg sync.WaitGroup
	for i := range clones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb := backend.Sandbox{ID: fmt.Sprintf("tpl-clone-%d", i), StateDir: filepath.Join(t.TempDir(), "sb")}
			bi, err := b.Start(ctx, sb)
			clones[i] = clone{bi, sb, err}
		}()
	}
	wg.Wait()
	for _, c := range clones {
		if c.err != nil {
			t.Fatal(c.err)
		}
		defer shutdownClean(t, c.bi, c.sb)
		if !c.bi.(*vmbackend.Instance).FromTemplate() {
			t.Errorf("%s booted cold", c.sb.ID)
		}
	}
	if n := len(b.Templates()); n != 1 {
		t.Fatalf("%d templates, want the one", n)
	}
	seen := map[string]string{}
	for _, c := range clones {
		out, code := run(t, ctx, c.bi, "rnd", root, "/bin/sh", "-c", "date +%s; head -c 16 /dev/urandom | od -An -tx1")
		host := time.Now().Unix()
		date, rnd, _ := strings.Cut(out, "\n")
		guest, err := strconv.ParseInt(strings.TrimSpace(date), 10, 64)
		if code != 0 || err != nil {
			t.Fatalf("%s: status %d output %q", c.sb.ID, code, out)
		}
		// The template was saved earlier: its clock is behind until
		// SetupSandbox sets it.
		if d := host - guest; d < 0 || d > 30 {
			t.Errorf("%s: guest time %d, host %d: off by %ds", c.sb.ID, guest, host, d)
		}
		rnd = strings.TrimSpace(rnd)
		if len(rnd) < 32 {
			t.Fatalf("%s: random bytes %q", c.sb.ID, rnd)
		}
		if other, dup := seen[rnd]; dup {
			t.Errorf("%s read the same random bytes as %s: %s", c.sb.ID, other, rnd)
		}
		seen[rnd] = c.sb.ID
	}
}

// TestTemplateColdBoot: sandboxes a template must not serve boot cold.
func TestTemplateColdBoot(t *testing.T) {
	a, ctx := vmTest(t, 4*time.Minute)
	cfg := qemuConfig(t, a)
	off := cfg
	off.Template = vmbackend.TemplateOff
	for _, tc := range []struct {
		name string
		cfg  vm.Config
		sb   backend.Sandbox
	}{
		{"bigger memory", cfg, backend.Sandbox{Resources: backend.Resources{MemoryLimitBytes: 256 << 20}}},
		{"pod annotation", cfg, backend.Sandbox{Annotations: map[string]string{vmbackend.TemplateAnnotation: "off"}}},
		{"config off", off, backend.Sandbox{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := templateBackend(t, ctx, tc.cfg)
			tc.sb.ID = "tpl-cold"
			bi, sb := startSandbox(t, ctx, b, tc.sb)
			t.Cleanup(func() { bi.Shutdown(context.Background()) })
			if bi.(*vmbackend.Instance).FromTemplate() {
				t.Error("restored from a template")
			}
			if n := len(b.Templates()); n != 0 {
				t.Errorf("%d templates built for a cold boot", n)
			}
			shutdownClean(t, bi, sb)
		})
	}
	if _, err := vmbackend.New(ctx, vmbackend.WithHypervisor(vm.QEMU, vm.Config{Template: "sometimes"})); err == nil {
		t.Error("template = \"sometimes\" accepted")
	}
}

// TestTemplateRebuild: a changed kernel gets a new template; a corrupt
// state file makes the next sandbox boot cold and the one after it come
// from a rebuilt template.
func TestTemplateRebuild(t *testing.T) {
	a, ctx := vmTest(t, 5*time.Minute)
	cfg := qemuConfig(t, a)
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	img, err := os.ReadFile(a.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kernel, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Kernel = kernel
	b := templateBackend(t, ctx, cfg)
	start := func(id string) bool {
		t.Helper()
		bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: id})
		t.Cleanup(func() { bi.Shutdown(context.Background()) })
		defer shutdownClean(t, bi, sb)
		return bi.(*vmbackend.Instance).FromTemplate()
	}
	if !start("tpl-a") {
		t.Fatal("first sandbox booted cold")
	}
	first := b.Templates()

	// The same kernel written again: a new file version, a new template;
	// the old one is removed (nothing can ask for it again).
	if err := os.WriteFile(kernel, img, 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	os.Chtimes(kernel, future, future)
	if !start("tpl-b") {
		t.Fatal("sandbox after the kernel change booted cold")
	}
	now := b.Templates()
	if len(now) != 1 || now[0] == first[0] {
		t.Fatalf("templates %v after a kernel change, want one other than %v", now, first)
	}
	fresh := now[0]

	// Corrupt the current template's state (same size: only a restore
	// can tell).
	state := filepath.Join(fresh, "state")
	st, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, bytes.Repeat([]byte{0x5a}, len(st)), 0o600); err != nil {
		t.Fatal(err)
	}
	if start("tpl-c") {
		t.Fatal("restored from a corrupt template")
	}
	if !start("tpl-d") {
		t.Fatal("sandbox after the corrupt template booted cold: not rebuilt")
	}
}

// TestTemplateRestoreKilled: a QEMU killed while restoring fails the
// start cleanly: an error, and no process, socket or directory left.
func TestTemplateRestoreKilled(t *testing.T) {
	a, ctx := vmTest(t, 4*time.Minute)
	b := templateBackend(t, ctx, qemuConfig(t, a))
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "tpl-warm"})
	shutdownClean(t, bi, sb)

	sb = backend.Sandbox{ID: "tpl-killed", StateDir: filepath.Join(t.TempDir(), "sb")}
	stop := make(chan struct{})
	killed := make(chan int, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Once QEMU listens for the template's state: mid-restore.
			_, err := os.Stat(filepath.Join(sb.StateDir, "vm", "migrate.sock"))
			if pids := qemuPids(sb.StateDir); len(pids) > 0 && err == nil {
				syscall.Kill(pids[0], syscall.SIGKILL)
				killed <- pids[0]
				return
			}
			time.Sleep(time.Millisecond) // poll interval
		}
	}()
	bi, err := b.Start(ctx, sb)
	close(stop)
	if err == nil {
		bi.Shutdown(ctx)
		select {
		case pid := <-killed:
			t.Fatalf("start succeeded though its qemu %d was killed", pid)
		default:
			t.Skip("the restore finished before qemu could be found and killed")
		}
	}
	t.Logf("start failed as it should: %v", err)
	if pids := qemuPids(sb.StateDir); len(pids) != 0 {
		t.Errorf("qemu left: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(sb.StateDir, "vm")); !os.IsNotExist(err) {
		t.Errorf("VM state directory left: %v", err)
	}
	if m := mountsUnder(sb.StateDir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if n := len(b.Templates()); n != 1 {
		t.Errorf("%d templates after a killed restore, want the one (not the template's fault)", n)
	}
}

// TestBuildTemplatesAhead: BuildTemplates makes the template of the
// default sizes before any sandbox, and the first sandbox is restored
// from that very template (no second one is built); with templates off it
// builds nothing.
func TestBuildTemplatesAhead(t *testing.T) {
	a, ctx := vmTest(t, 4*time.Minute)
	cfg := qemuConfig(t, a)
	b := templateBackend(t, ctx, cfg)
	dir, err := b.BuildTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Templates(); len(got) != 1 || got[0] != dir {
		t.Fatalf("templates after BuildTemplates: %v; want [%s]", got, dir)
	}
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "ahead"})
	if !bi.(*vmbackend.Instance).FromTemplate() {
		t.Error("the first sandbox after BuildTemplates booted cold")
	}
	if got := b.Templates(); len(got) != 1 || got[0] != dir {
		t.Errorf("templates after the first sandbox: %v; want only the one built ahead, %s", got, dir)
	}
	shutdownClean(t, bi, sb)

	off := cfg
	off.Template = vmbackend.TemplateOff
	ob := templateBackend(t, ctx, off)
	if dir, err := ob.BuildTemplates(ctx); err != nil || dir != "" || len(ob.Templates()) != 0 {
		t.Fatalf("template = off: BuildTemplates built %q (%v), %d templates", dir, err, len(ob.Templates()))
	}
}
