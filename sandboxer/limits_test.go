package sandboxer_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/procfs"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// TestFdBombOtherTenants: with the sandboxer's RLIMIT_NOFILE at 1600 and
// 256 of it reserved (as kuasar-sandboxer sets it up), one sandbox's fd
// bomb stops at its container's limit (EMFILE at the default 1024) while
// another tenant's sandbox is created and runs a task; a second bomb gets
// ENFILE at the guests' budget, and the sandboxer's own API still creates
// and starts sandboxes and tasks.
func TestFdBombOtherTenants(t *testing.T) {
	const soft, reserve, perContainer = 1600, 256, 1024
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Max < soft {
		t.Skipf("hard RLIMIT_NOFILE %d < %d", old.Max, soft)
	}
	low := unix.Rlimit{Cur: soft, Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	r := newRig(t, wasmbackend.WithOpenFileBudget(soft-reserve), wasmbackend.WithDefaultOpenFileLimit(perContainer))
	if _, err := fixtures.WriteFile(r.src, "fdbomb"); err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), "limits")

	// Tenant A: a sandbox whose container opens files until refused and
	// holds them.
	tasksA := r.startSandbox(t, ctx, "tenant-a")
	out1 := r.startTask(t, ctx, tasksA, "bomb-1", "/fdbomb.wasm", "600", "/")
	if got := waitLine(t, out1); got != "opened=1020 errno=EMFILE" {
		t.Fatalf("bomb-1: %q; want EMFILE at the per-container limit", got)
	}

	// Tenant B: a new sandbox runs a task meanwhile.
	if code, err := r.runOnce(ctx, "tenant-b", r.bundle(t, "hello-b", []string{"/hello.wasm"})); err != nil || code != 0 {
		t.Fatalf("tenant B next to the bomb: exit %d, %v", code, err)
	}

	// A second bomb of tenant A takes the rest of the guests' budget: ENFILE.
	out2 := r.startTask(t, ctx, tasksA, "bomb-2", "/fdbomb.wasm", "600", "/")
	if got := waitLine(t, out2); !strings.HasSuffix(got, "errno=ENFILE") {
		t.Fatalf("bomb-2: %q; want ENFILE at the guests' budget", got)
	}
	// The sandboxer's own API still works: the reserve is untouched.
	if _, err := r.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "tenant-c"}); err != nil {
		t.Fatalf("create a sandbox with the guests' budget spent: %v", err)
	}
	st, err := r.client.Start(ctx, &api.ControllerStartRequest{SandboxID: "tenant-c"})
	if err != nil {
		t.Fatalf("start a sandbox with the guests' budget spent: %v", err)
	}
	tasksC, closeC, err := taskClient(st.Address)
	if err != nil {
		t.Fatalf("dial tenant C's task API: %v", err)
	}
	defer closeC()
	// Its task is created, started and runs: hello opens no file (wasi-libc
	// only opens preopened mounts for programs that use files).
	hello := r.bundle(t, "hello-c", []string{"/hello.wasm"})
	if _, err := tasksC.Create(ctx, hello); err != nil {
		t.Fatalf("create a task with the guests' budget spent: %v", err)
	}
	if _, err := tasksC.Start(ctx, &taskAPI.StartRequest{ID: "hello-c"}); err != nil {
		t.Fatalf("start a task with the guests' budget spent: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	w, err := tasksC.Wait(wctx, &taskAPI.WaitRequest{ID: "hello-c"})
	cancel()
	if err != nil || w.ExitStatus != 0 {
		t.Errorf("hello-c with the guests' budget spent: %v, %v; want exit 0", w, err)
	}
	if _, err := tasksC.Delete(ctx, &taskAPI.DeleteRequest{ID: "hello-c"}); err != nil {
		t.Errorf("delete hello-c: %v", err)
	}

	// Once tenant A's bombs are killed, its files are given back.
	for _, id := range []string{"bomb-1", "bomb-2"} {
		if _, err := tasksA.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL)}); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		w, err := tasksA.Wait(wctx, &taskAPI.WaitRequest{ID: id})
		cancel()
		if err != nil || w.ExitStatus != 137 {
			t.Fatalf("%s after SIGKILL: %v, %v", id, w, err)
		}
		if _, err := tasksA.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"tenant-a", "tenant-c"} {
		if _, err := r.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if code, err := r.runOnce(ctx, "tenant-d", r.bundle(t, "hello-d", []string{"/hello.wasm"})); err != nil || code != 0 {
		t.Fatalf("a tenant after the bombs ended: exit %d, %v", code, err)
	}
}

// startSandbox creates and starts sandbox id and returns its Task API.
func (r *rig) startSandbox(t *testing.T, ctx context.Context, id string) taskAPI.TTRPCTaskService {
	t.Helper()
	if _, err := r.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id}); err != nil {
		t.Fatal(err)
	}
	st, err := r.client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil {
		t.Fatal(err)
	}
	tasks, closeFn, err := taskClient(st.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	return tasks
}

// startTask creates and starts a task running args with its stdout in a
// file, whose path it returns.
func (r *rig) startTask(t *testing.T, ctx context.Context, tasks taskAPI.TTRPCTaskService, id string, args ...string) string {
	t.Helper()
	req := r.bundle(t, id, args)
	out := filepath.Join(r.dir, id+".out")
	req.Stdout = "file://" + out
	if _, err := tasks.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitLine polls file until it holds a whole line and returns it.
func waitLine(t *testing.T, file string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(file)
		if line, _, ok := strings.Cut(string(b), "\n"); ok {
			return line
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no line after a minute (have %q)", file, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMemoryBombOtherTenants: a pod with no memory limit whose container
// grows until refused is stopped at the default limit; while it holds that
// memory the sandboxer's resident memory has grown by no more than 1.25 x
// the limit + 64 MiB, another tenant's pod runs, and once the bomb is
// killed the memory goes back to the host.
func TestMemoryBombOtherTenants(t *testing.T) {
	const limit = 128 << 20
	r := newRig(t, wasmbackend.WithDefaultMemoryLimit(limit))
	if _, err := fixtures.WriteFile(r.src, "membomb"); err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), "limits")
	before, err := procfs.RSSBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	tasks := r.startSandbox(t, ctx, "bomb-pod")
	out := r.startTask(t, ctx, tasks, "bomb", "/membomb.wasm", "0", "600")
	line := waitLine(t, out)
	reached, err := strconv.ParseUint(strings.TrimPrefix(line, "reached="), 10, 64)
	if err != nil || reached > limit || reached+1<<20 <= limit {
		t.Fatalf("bomb printed %q; want reached= within 1 MiB under %d", line, limit)
	}
	during, err := procfs.RSSBytes(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RSS %d MiB before, %d MiB while the bomb holds %d MiB", before>>20, during>>20, reached>>20)
	if during > before+limit+limit/4+64<<20 {
		t.Errorf("RSS grew by %d MiB for a guest capped at %d MiB", (during-before)>>20, limit>>20)
	}
	if code, err := r.runOnce(ctx, "other-pod", r.bundle(t, "hello-other", []string{"/hello.wasm"})); err != nil || code != 0 {
		t.Fatalf("another pod next to the bomb: exit %d, %v", code, err)
	}
	if _, err := tasks.Kill(ctx, &taskAPI.KillRequest{ID: "bomb", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	w, err := tasks.Wait(wctx, &taskAPI.WaitRequest{ID: "bomb"})
	cancel()
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("bomb after SIGKILL: %v, %v", w, err)
	}
	if after, _ := procfs.RSSBytes(0); after > before+64<<20 {
		t.Errorf("RSS %d MiB after the bomb ended, %d MiB before: its memory was not given back", after>>20, before>>20)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "bomb"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: "bomb-pod"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "bomb-pod"}); err != nil {
		t.Fatal(err)
	}
}
