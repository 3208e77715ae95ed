package wasmtask_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/wasm"
)

// countingEngine counts the modules it is asked to compile.
type countingEngine struct {
	wasm.Engine
	compiles atomic.Int32
}

func (e *countingEngine) Compile(ctx context.Context, b []byte) (wasm.Module, error) {
	e.compiles.Add(1)
	return e.Engine.Compile(ctx, b)
}

// TestModuleCacheByFileIdentity: a Create whose module file is unchanged
// since an earlier Create (on any service sharing the cache) reuses the
// module without reading the file; a file that changed is read again and
// its new content runs; a file changed too recently to tell is never
// cached.
func TestModuleCacheByFileIdentity(t *testing.T) {
	for _, tc := range []struct {
		name        string
		stableAfter time.Duration
		wantCached  bool
	}{
		{"old file is cached", -time.Hour, true},
		{"recent file is not", time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wasmtask.SetStableAfter(t, tc.stableAfter)
			eng := &countingEngine{Engine: testEngine(t)}
			cache := wasmtask.NewModuleCache()
			h := newHarness(t, wasmtask.WithEngine(eng), wasmtask.WithModuleCache(cache))
			// A second service (another sandbox) on the same engine and cache.
			h2 := newHarness(t, wasmtask.WithEngine(eng), wasmtask.WithModuleCache(cache))
			args := []string{"/m.wasm", "exit", "7"}
			first := h.bundle(t, "m1", args, map[string][]byte{"m.wasm": fixtures.WASI})
			run := func(h *harness, id string, want uint32) {
				t.Helper()
				b := h.bundle(t, id, args, nil)
				b.req.Rootfs = first.rootfs // the same image directory
				if got := h.runToExit(t, b); got != want {
					t.Fatalf("%s: exit %d, want %d", id, got, want)
				}
				r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id})).get(t)
			}
			run(h, "a", 7)
			run(h, "b", 7)
			run(h2, "c", 7)
			wantCompiles, wantLen := int32(3), 0
			if tc.wantCached {
				wantCompiles, wantLen = 1, 1
			}
			if n := eng.compiles.Load(); n != wantCompiles {
				t.Errorf("after three runs of one file: %d compiles, want %d", n, wantCompiles)
			}
			if n := cache.Len(); n != wantLen {
				t.Errorf("cache holds %d files, want %d", n, wantLen)
			}
			// Replace the module: the next Create must run the new one.
			if err := os.WriteFile(filepath.Join(first.src, "m.wasm"), fixtures.ExitCode, 0o644); err != nil {
				t.Fatal(err)
			}
			run(h2, "d", fixtures.ExitCodeValue)
			if n := eng.compiles.Load(); n != wantCompiles+1 {
				t.Errorf("after the file changed: %d compiles, want %d", n, wantCompiles+1)
			}
		})
	}
}

// TestModuleCacheRewriteInPlace is the attack on the cache: whoever can
// write a module file (a guest through a writable mount that another
// container runs its module from) rewrites it in place, keeping its size,
// and sets its mtime back, hoping the next Create runs the cached compile
// of the old content. The cache keys on the change time too, which no
// process can set, so the rewritten file is read and compiled again.
func TestModuleCacheRewriteInPlace(t *testing.T) {
	const stable = 20 * time.Millisecond
	wasmtask.SetStableAfter(t, stable)
	eng := &countingEngine{Engine: testEngine(t)}
	h := newHarness(t, wasmtask.WithEngine(eng), wasmtask.WithModuleCache(wasmtask.NewModuleCache()))
	args := []string{"/m.wasm", "exit", "7"}
	first := h.bundle(t, "m1", args, map[string][]byte{"m.wasm": fixtures.WASI})
	path := filepath.Join(first.src, "m.wasm")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file must be older than the stability window to be cached at
	// all (waiting on the clock, not on another goroutine).
	for deadline := time.Now().Add(10 * time.Second); time.Since(st.ModTime()) < 3*stable; {
		if time.Now().After(deadline) {
			t.Fatal("the clock did not move")
		}
		time.Sleep(stable)
	}
	run := func(id string) {
		t.Helper()
		b := h.bundle(t, id, args, nil)
		b.req.Rootfs = first.rootfs
		if got := h.runToExit(t, b); got != 7 {
			t.Fatalf("%s: exit %d, want 7", id, got)
		}
		r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: id})).get(t)
	}
	run("a")
	run("b")
	if n := eng.compiles.Load(); n != 1 {
		t.Fatalf("two runs of an unchanged file: %d compiles, want 1 (cached)", n)
	}
	// Rewrite in place: same bytes, same size, same inode, mtime put back.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fixtures.WASI, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if st2, err := os.Stat(path); err != nil || st2.Size() != st.Size() || !st2.ModTime().Equal(st.ModTime()) {
		t.Fatalf("rewrite did not keep size and mtime: %v, %v", st2, err)
	}
	run("c")
	if n := eng.compiles.Load(); n != 2 {
		t.Fatalf("after an in-place rewrite with the mtime put back: %d compiles, want 2 (the cache must not serve the old compile)", n)
	}
}
