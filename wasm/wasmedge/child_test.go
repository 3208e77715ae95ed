//go:build wasmedge

package wasmedge_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// TestAOTCompiledOnce compiles the same module from four engines (as four
// sandboxer processes would) sharing one cache directory: one shared object
// is written, nothing temporary is left, and a later engine reuses it.
func TestAOTCompiledOnce(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	engines := make([]wasm.Engine, 4)
	for i := range engines {
		e, err := wasmedge.New(context.Background(), wasmedge.WithCacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close(context.Background())
		engines[i] = e
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.Compile(context.Background(), fixtures.Hello); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	var objects []string
	for _, f := range files {
		switch {
		case strings.HasSuffix(f, ".so"):
			objects = append(objects, f)
		case strings.HasSuffix(f, ".lock"):
		default:
			t.Errorf("cache holds %s: want only the shared object and its lock", f)
		}
	}
	if len(objects) != 1 {
		t.Fatalf("cache holds %d shared objects (%v), want 1", len(objects), objects)
	}
	st, _ := os.Stat(objects[0])
	e := newEngineIn(t, dir)
	m := compile(t, e, fixtures.Hello)
	if st2, _ := os.Stat(objects[0]); !os.SameFile(st, st2) || !st2.ModTime().Equal(st.ModTime()) {
		t.Error("a later engine compiled the module again")
	}
	if r := run(t, m, wasm.RunConfig{Args: []string{"hello"}}); r.err != nil || r.code != 0 || !strings.Contains(r.stdout, fixtures.HelloGreeting) {
		t.Errorf("run from the cache = %d %q %v", r.code, r.stdout, r.err)
	}
}

func newEngineIn(t *testing.T, dir string) wasm.Engine {
	e, err := wasmedge.New(context.Background(), wasmedge.WithCacheDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// TestChildKilledAndReaped stops a guest blocked in a sleep: its child
// process is gone (killed and reaped, no zombie) once Run returns.
func TestChildKilledAndReaped(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.WASI)
	ctx, cancel := context.WithCancel(context.Background())
	pids := make(chan int, 1)
	done := make(chan result, 1)
	go func() {
		code, err := m.Run(ctx, wasm.RunConfig{Args: []string{"w", "sleep", "1000"}, Started: func(i wasm.Instance) {
			pids <- pidOf(i)
		}})
		done <- result{code: code, err: err}
	}()
	pid := <-pids
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		t.Fatalf("child %d not running: %v", pid, err)
	}
	cancel()
	select {
	case r := <-done:
		if r.code != wasm.ExitKilled || r.err != nil {
			t.Fatalf("Run = %d, %v; want %d", r.code, r.err, wasm.ExitKilled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("child %d still exists after Run returned: %v", pid, err)
	}
}

// pidOf is the pid of the child process running an instance.
func pidOf(i wasm.Instance) int { return i.(interface{ Pid() int }).Pid() }

// TestFileStdio gives the guest files as stdio: the child writes to them
// directly.
func TestFileStdio(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.WASI)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	code, err := m.Run(context.Background(), wasm.RunConfig{Args: []string{"w", "args", "x"}, Stdout: out})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if b, _ := os.ReadFile(out.Name()); string(b) != "w\nargs\nx\n" {
		t.Errorf("stdout file = %q", b)
	}
}

// TestStartedMemory reads a live child's memory through the Started view.
func TestStartedMemory(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.WASI)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	views := make(chan wasm.Instance, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx, wasm.RunConfig{Args: []string{"w", "sleep", "1000"}, Started: func(i wasm.Instance) { views <- i }})
	}()
	inst := <-views
	waitUntil(t, func() bool { return inst.MemoryBytes() >= m.MinMemoryBytes() && inst.MemoryBytes() > 0 })
	cancel()
	<-done
}

// TestLimits: the open-file limit gives EMFILE in the guest, and a pod
// budget smaller than the module's minimum refuses the run as out of memory.
func TestLimits(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.FdBomb)
	r := run(t, m, wasm.RunConfig{Args: []string{"fdbomb", "0", "/d"}, OpenFileLimit: 20, Mounts: []wasm.Mount{{HostPath: t.TempDir(), GuestPath: "/d"}}})
	if r.err != nil || r.code != 0 || !strings.Contains(r.stdout, "errno=EMFILE") {
		t.Errorf("fdbomb with 20 files = %d %q %v, want EMFILE", r.code, r.stdout, r.err)
	}
	t.Logf("fdbomb: %s", strings.TrimSpace(r.stdout))

	big := compile(t, e, fixtures.BigMem)
	_, err := big.Run(context.Background(), wasm.RunConfig{MemoryBudget: wasm.NewMemoryBudget(16 << 20)})
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !errors.Is(err, wasm.ErrOutOfMemory) {
		t.Errorf("run over the pod budget: %v, want ErrResourceExhausted and ErrOutOfMemory", err)
	}
}

// TestInterpreterMode runs the hello module on WasmEdge's interpreter.
func TestInterpreterMode(t *testing.T) {
	e := newEngine(t, wasmedge.WithInterpreter())
	m := compile(t, e, fixtures.Hello)
	if r := run(t, m, wasm.RunConfig{Args: []string{"hello"}}); r.err != nil || r.code != 0 || !strings.Contains(r.stdout, fixtures.HelloGreeting) {
		t.Errorf("interpreter run = %d %q %v", r.code, r.stdout, r.err)
	}
}
