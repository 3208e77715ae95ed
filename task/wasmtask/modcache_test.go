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
