package wasmbackend_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

const ns = "kuasar-test"

// createTask makes a bundle whose rootfs (bind-mounted by Create) holds
// module, and creates and starts a task running args in inst.
func createTask(t *testing.T, ctx context.Context, inst backend.Instance, dir, id string, args []string) string {
	t.Helper()
	bundle, src := filepath.Join(dir, id), filepath.Join(dir, id+"-src")
	os.MkdirAll(bundle, 0o755)
	os.MkdirAll(src, 0o755)
	if err := os.WriteFile(filepath.Join(src, "m.wasm"), fixtures.WASI, 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(&specs.Spec{Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: args, Cwd: "/"}})
	os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o644)
	_, err := inst.Tasks().Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle,
		Rootfs: []*types.Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Tasks().Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(bundle, "rootfs")
}

func isMounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+dir+" ")
}

func newBackend(t *testing.T) *wasmbackend.Backend {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: tasks mount their rootfs")
	}
	b, err := wasmbackend.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

func TestStopMetricsShutdown(t *testing.T) {
	b := newBackend(t)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	dir := t.TempDir()
	sb := backend.Sandbox{ID: "sb1", Namespace: ns, StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(sb.StateDir, 0o700)
	inst, err := b.Start(ctx, sb)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Pid() != uint32(os.Getpid()) {
		t.Errorf("pid %d", inst.Pid())
	}
	exitCtx := inst.(backend.ExitNotifier).ExitContext()
	rootfs := createTask(t, ctx, inst, dir, "spin", []string{"/m.wasm", "loop"})
	// The guest's memory and CPU time count once its goroutine has
	// instantiated it and run on its thread: poll, with a deadline.
	var m backend.Metrics
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) { // polling interval
		if m, err = inst.Metrics(ctx); err != nil {
			t.Fatal(err)
		}
		if m.Tasks != 1 || m.CPUNanos != 0 && m.MemoryBytes != 0 || time.Now().After(deadline) {
			break
		}
	}
	if exitCtx.Err() != nil {
		t.Fatal("ExitContext is done while the sandbox runs")
	}
	if m.Tasks != 1 || m.CPUNanos == 0 || m.MemoryBytes == 0 || m.MemoryBytes%65536 != 0 {
		t.Errorf("metrics with one spinning task: %+v", m)
	}
	if err := inst.Stop(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	w, err := inst.Tasks().Wait(ctx, &taskAPI.WaitRequest{ID: "spin"})
	if err != nil || w.ExitStatus != 143 {
		t.Errorf("task after Stop: %v %v, want 143 (SIGTERM)", w, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if e, err := inst.Wait(wctx); err != nil || e.Status != 0 {
		t.Errorf("sandbox wait: %+v %v", e, err)
	}
	// Wait returned, so the exit is recorded: ExitContext must be done
	// already, with no further wait.
	if exitCtx.Err() == nil {
		t.Error("ExitContext is not done after the sandbox exited")
	}
	if m, _ := inst.Metrics(ctx); m.Tasks != 0 || m.MemoryBytes != 0 {
		t.Errorf("metrics after stop: %+v", m)
	}
	if !isMounted(t, rootfs) {
		t.Error("Stop unmounted a rootfs containerd has not deleted yet")
	}
	for range 2 { // idempotent
		if err := inst.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if isMounted(t, rootfs) {
		t.Error("rootfs still mounted after Shutdown")
	}
	if _, err := os.Stat(filepath.Join(sb.StateDir, "wasm-tasks.json")); !os.IsNotExist(err) {
		t.Errorf("state file left: %v", err)
	}
}

func TestRecoverReportsExitedAndCleansUp(t *testing.T) {
	b := newBackend(t)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	dir := t.TempDir()
	sb := backend.Sandbox{ID: "sb2", Namespace: ns, StateDir: filepath.Join(dir, "state")}
	os.MkdirAll(sb.StateDir, 0o700)
	old, err := b.Start(ctx, sb)
	if err != nil {
		t.Fatal(err)
	}
	cp := old.Checkpoint() // persisted at sandbox start, before any task
	rootfs := createTask(t, ctx, old, dir, "idle", []string{"/m.wasm", "sleep", "600"})
	// The sandboxer restarts: a new backend recovers the sandbox, the old
	// instance is simply gone (its goroutines stopped here by hand).
	old.(*wasmbackend.Instance).Service().KillAll(ctx, 9)

	b2 := newBackend(t)
	inst, err := b2.Recover(ctx, sb, cp)
	if err != nil {
		t.Fatal(err)
	}
	e, err := inst.Wait(ctx)
	if err != nil || e.Status != 137 {
		t.Errorf("recovered sandbox: %+v %v, want exited 137", e, err)
	}
	st, err := inst.Tasks().State(ctx, &taskAPI.StateRequest{ID: "idle"})
	if err != nil || st.Status != task.Status_STOPPED || st.ExitStatus != 137 {
		t.Errorf("recovered task: %v %v", st, err)
	}
	if err := inst.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, rootfs) {
		t.Error("rootfs of the lost task still mounted after Shutdown")
	}
}

func TestRecoverBadCheckpoint(t *testing.T) {
	b := newBackend(t)
	if _, err := b.Recover(context.Background(), backend.Sandbox{ID: "x"}, []byte("{")); err == nil {
		t.Error("accepted a corrupt checkpoint")
	}
}
