package vmbackend_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// poolBackend is templateBackend with a warm pool of size n, closed (and
// checked to leave no clone) at the end of the test.
func poolBackend(t testing.TB, ctx context.Context, cfg vm.Config, n int) *vmbackend.Backend {
	t.Helper()
	cfg.TemplatePool = n
	b := templateBackend(t, ctx, cfg)
	t.Cleanup(func() { closePool(t, b) })
	return b
}

// closePool closes b and checks that its idle clones are gone: no
// process, no directory.
func closePool(t testing.TB, b *vmbackend.Backend) {
	t.Helper()
	pids, dirs := vmbackend.PoolClones(b)
	if err := b.Close(context.Background()); err != nil {
		t.Error(err)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			t.Errorf("pool clone QEMU %d runs after Close", pid)
		}
	}
	for _, d := range dirs {
		if _, err := os.Lstat(d); !os.IsNotExist(err) {
			t.Errorf("pool clone directory %s left after Close: %v", d, err)
		}
	}
	if idle, _ := b.PoolIdle(); idle != 0 {
		t.Errorf("%d idle clones after Close", idle)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

// waitIdle polls until b's pool holds n idle clones (each poll bounded by
// ctx's deadline).
func waitIdle(t testing.TB, ctx context.Context, b *vmbackend.Backend, n int) {
	t.Helper()
	for {
		if idle, _ := b.PoolIdle(); idle == n {
			return
		}
		select {
		case <-ctx.Done():
			idle, _ := b.PoolIdle()
			t.Fatalf("pool holds %d idle clones, want %d: %v", idle, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestPool: the first sandbox of a template fills the pool; the next
// adopts the clone (its container runs with the sandbox's hostname, the
// host's time, and the clone's directory is now the sandbox's), the pool
// refills, removal leaves nothing; a sandbox of other sizes or with the
// annotation off does not take from the pool; Close leaves no clone.
func TestPool(t *testing.T) {
	a, ctx := vmTest(t, 5*time.Minute)
	b := poolBackend(t, ctx, qemuConfig(t, a), 1)
	root := templateRootfs(t)

	first, _ := startSandbox(t, ctx, b, backend.Sandbox{ID: "pool-first"})
	defer first.Shutdown(context.Background())
	if first.(*vmbackend.Instance).FromPool() {
		t.Fatal("the first sandbox of a template came from an empty pool")
	}
	waitIdle(t, ctx, b, 1)
	_, cloneDirs := vmbackend.PoolClones(b)

	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "pool-second", Hostname: "pool-second"})
	defer bi.Shutdown(context.Background())
	inst := bi.(*vmbackend.Instance)
	if !inst.FromPool() || !inst.FromTemplate() {
		t.Fatalf("second sandbox: from pool %v, from template %v; want both", inst.FromPool(), inst.FromTemplate())
	}
	if _, err := os.Lstat(cloneDirs[0]); !os.IsNotExist(err) {
		t.Errorf("the adopted clone's pool directory %s is still there: %v", cloneDirs[0], err)
	}
	if m := mountsUnder(filepath.Join(sb.StateDir, "shared")); len(m) != 1 {
		t.Errorf("mounts under the adopted shared directory: %v; want its own bind", m)
	}
	out, code := run(t, ctx, bi, "c", root, "/bin/sh", "-c", "hostname; date +%s; exit 4")
	host, _, _ := strings.Cut(out, "\n")
	if code != 4 || host != "pool-second" {
		t.Fatalf("container in the adopted clone: status %d output %q; want 4 and hostname pool-second", code, out)
	}
	if _, adopted := b.PoolIdle(); adopted != 1 {
		t.Errorf("adopted %d clones, want 1", adopted)
	}
	waitIdle(t, ctx, b, 1) // refilled
	shutdownClean(t, bi, sb)
	if pid := int(bi.Pid()); pid != 0 && syscall.Kill(pid, 0) == nil && !isZombie(pid) {
		t.Errorf("QEMU %d of the adopted clone runs after Shutdown", pid)
	}

	// Other sizes and the annotation: not from the pool, which keeps
	// its clone.
	for _, sb := range []backend.Sandbox{
		{ID: "pool-big", Resources: backend.Resources{MemoryLimitBytes: 384 << 20}},
		{ID: "pool-off", Annotations: map[string]string{vmbackend.TemplateAnnotation: vmbackend.TemplateOff}},
	} {
		bi, sb := startSandbox(t, ctx, b, sb)
		if bi.(*vmbackend.Instance).FromPool() {
			t.Errorf("%s came from the pool", sb.ID)
		}
		if idle, _ := b.PoolIdle(); idle != 1 {
			t.Errorf("after %s the pool holds %d clones, want 1", sb.ID, idle)
		}
		shutdownClean(t, bi, sb)
	}
}

// TestPoolConcurrentTakes: two sandboxes started at once from a pool of
// one both start (one adopts the clone, the other is restored) and run
// containers.
func TestPoolConcurrentTakes(t *testing.T) {
	a, ctx := vmTest(t, 5*time.Minute)
	b := poolBackend(t, ctx, qemuConfig(t, a), 1)
	root := templateRootfs(t)
	first, _ := startSandbox(t, ctx, b, backend.Sandbox{ID: "pool-fill"})
	first.Shutdown(ctx)
	waitIdle(t, ctx, b, 1)

	type res struct {
		bi  backend.Instance
		sb  backend.Sandbox
		err error
	}
	rs := make([]res, 2)
	var wg sync.WaitGroup
	for i := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Beside the first one's: the pool is per parent directory.
			sb := backend.Sandbox{ID: "pool-race-" + strconv.Itoa(i), StateDir: t.TempDir()}
			bi, err := b.Start(ctx, sb)
			rs[i] = res{bi, sb, err}
		}()
	}
	wg.Wait()
	pooled := 0
	for _, r := range rs {
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer shutdownClean(t, r.bi, r.sb)
		if r.bi.(*vmbackend.Instance).FromPool() {
			pooled++
		}
		if out, code := run(t, ctx, r.bi, "c", root, "/bin/echo", "ok"); code != 0 || out != "ok\n" {
			t.Errorf("%s: status %d output %q", r.sb.ID, code, out)
		}
	}
	if pooled != 1 {
		t.Errorf("%d of 2 sandboxes came from a pool of 1, want 1", pooled)
	}
}

// TestPoolCrash: the backend is abandoned (as when the sandboxer is
// killed) with one sandbox running in an adopted clone and one idle clone
// in the pool. A new backend's Recover re-attaches the sandbox (same
// QEMU, runs containers) and reaps the idle clone: its QEMU is killed and
// its directory removed.
func TestPoolCrash(t *testing.T) {
	a, ctx := vmTest(t, 5*time.Minute)
	cfg := qemuConfig(t, a)
	b := poolBackend(t, ctx, cfg, 1)
	root := templateRootfs(t)
	first, _ := startSandbox(t, ctx, b, backend.Sandbox{ID: "crash-fill"})
	first.Shutdown(ctx)
	waitIdle(t, ctx, b, 1)
	bi, sb := startSandbox(t, ctx, b, backend.Sandbox{ID: "crash-adopted"})
	if !bi.(*vmbackend.Instance).FromPool() {
		t.Fatal("not from the pool")
	}
	waitIdle(t, ctx, b, 1)
	pids, dirs := vmbackend.PoolClones(b)
	cp := bi.Checkpoint()
	pid := bi.Pid()
	if !bi.(*vmbackend.Instance).Detach() {
		t.Fatal("cannot detach")
	}

	cfg.TemplatePool = 1
	b2 := qemuBackend(t, ctx, cfg, vmbackend.WithTemplateDir(filepath.Join(t.TempDir(), "templates2")))
	t.Cleanup(func() { closePool(t, b2) })
	ri, err := b2.Recover(ctx, sb, cp)
	if err != nil {
		t.Fatal(err)
	}
	defer ri.Shutdown(context.Background())
	if ri.Pid() != pid {
		t.Fatalf("recovered pid %d, want the adopted clone's %d", ri.Pid(), pid)
	}
	if out, code := run(t, ctx, ri, "c", root, "/bin/echo", "back"); code != 0 || out != "back\n" {
		t.Fatalf("container after recover: status %d output %q", code, out)
	}
	for i, p := range pids {
		if syscall.Kill(p, 0) == nil && !isZombie(p) {
			t.Errorf("idle clone QEMU %d survived the restart", p)
		}
		if _, err := os.Lstat(dirs[i]); !os.IsNotExist(err) {
			t.Errorf("idle clone directory %s survived the restart: %v", dirs[i], err)
		}
	}
	shutdownClean(t, ri, sb)
}
