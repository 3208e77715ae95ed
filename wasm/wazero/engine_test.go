package wazero_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/enginetest"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

func newEngine(t testing.TB, opts ...wazero.Option) wasm.Engine {
	t.Helper()
	e, err := wazero.New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func compile(t testing.TB, e wasm.Engine, b []byte) wasm.Module {
	t.Helper()
	m, err := e.Compile(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type result struct {
	code           int
	err            error
	stdout, stderr string
}

func run(t testing.TB, m wasm.Module, cfg wasm.RunConfig) result {
	t.Helper()
	var out, errb bytes.Buffer
	cfg.Stdout, cfg.Stderr = &out, &errb
	code, err := m.Run(context.Background(), cfg)
	return result{code, err, out.String(), errb.String()}
}

// TestConformance runs the engine conformance suite shared with every other
// engine (wasm/internal/enginetest); wazero with kuasar's WASI host is its
// reference, so it declares no departures.
func TestConformance(t *testing.T) {
	enginetest.Run(t, func(tb testing.TB) wasm.Engine { return newEngine(tb) }, enginetest.Departures{})
}

func TestCompileErrors(t *testing.T) {
	e := newEngine(t)
	tests := []struct {
		name    string
		module  []byte
		wantMsg string
	}{
		{"notwasm", fixtures.NotWasm, "no \\0asm header"},
		{"truncated", fixtures.Truncated, "invalid WebAssembly module"},
		{"empty", nil, "not a WebAssembly module"},
		{"header only", []byte("\x00asm\x01\x00\x00"), "invalid WebAssembly module"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Compile(context.Background(), tc.module)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Compile = %v, want ErrInvalidArgument mentioning %q", err, tc.wantMsg)
			}
		})
	}
}

func TestModuleInfo(t *testing.T) {
	e := newEngine(t)
	tests := []struct {
		module  []byte
		minMem  uint64
		exports []string
	}{
		{fixtures.BigMem, fixtures.BigMemPages * 65536, []string{"_start"}},
		{fixtures.Reactor, 65536, []string{"fail", "greet", "grow", "grow1k", "trap"}},
		{fixtures.Loop, 65536, []string{"_start"}},
	}
	for _, tc := range tests {
		m := compile(t, e, tc.module)
		if m.MinMemoryBytes() != tc.minMem {
			t.Errorf("%s: MinMemoryBytes = %d, want %d", m.Digest(), m.MinMemoryBytes(), tc.minMem)
		}
		if fmt.Sprint(m.Exports()) != fmt.Sprint(tc.exports) {
			t.Errorf("%s: Exports = %v, want %v", m.Digest(), m.Exports(), tc.exports)
		}
		if m.Digest() != digest.FromBytes(tc.module) {
			t.Errorf("Digest = %s, want %s", m.Digest(), digest.FromBytes(tc.module))
		}
	}
	h := compile(t, e, fixtures.Hello)
	if h.MinMemoryBytes() == 0 {
		t.Error("hello: MinMemoryBytes = 0")
	}
	if e.Name() != "wazero" {
		t.Errorf("Name = %q", e.Name())
	}
}

// blockingReader blocks until closed, like an idle terminal.
type blockingReader struct{ ch chan struct{} }

func (b blockingReader) Read([]byte) (int, error) { <-b.ch; return 0, io.EOF }

func TestConcurrentInstances(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.Hello)
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			arg := fmt.Sprint(i)
			code, err := m.Run(context.Background(), wasm.RunConfig{Args: []string{"hello", arg}, Stdout: &out})
			want := fixtures.HelloGreeting + "\nargv[0]=hello\nargv[1]=" + arg + "\n"
			if err != nil || code != 0 || out.String() != want {
				errs <- fmt.Errorf("instance %d: code %d, err %v, stdout %q", i, code, err, out.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestConcurrentLongRunning keeps many instances alive at once (blocked on
// stdin, like idle containers) and stops them all by cancelling.
func TestConcurrentLongRunning(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.WASI)
	const n = 500
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var killed atomic.Int32
	var live sync.WaitGroup // instances instantiated and about to run
	live.Add(n)
	block := blockingReader{make(chan struct{})}
	defer close(block.ch)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := m.Run(ctx, wasm.RunConfig{Args: []string{"w", "idle"}, Stdin: block, Started: func(wasm.Instance) { live.Done() }})
			if err == nil && code == wasm.ExitKilled {
				killed.Add(1)
			}
		}()
	}
	allLive := make(chan struct{})
	go func() { live.Wait(); close(allLive) }()
	select {
	case <-allLive:
	case <-time.After(2 * time.Minute):
		t.Fatalf("not all of %d instances started within 2 minutes", n)
	}
	cancel()
	wg.Wait()
	if killed.Load() != n {
		t.Fatalf("%d of %d idle instances reported 137 after cancel", killed.Load(), n)
	}
}

func TestInterpreter(t *testing.T) {
	e := newEngine(t, wazero.WithInterpreter())
	m := compile(t, e, fixtures.Hello)
	r := run(t, m, wasm.RunConfig{Args: []string{"h"}})
	if r.err != nil || r.code != 0 || !strings.HasPrefix(r.stdout, fixtures.HelloGreeting) {
		t.Fatalf("interpreter run = %+v", r)
	}
}

func TestCacheDir(t *testing.T) {
	dir := t.TempDir()
	e := newEngine(t, wazero.WithCacheDir(dir))
	compile(t, e, fixtures.Hello)
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	if n == 0 {
		t.Fatal("compiling with WithCacheDir wrote nothing to the cache directory")
	}
	// A second engine (a fresh process, in effect) runs from the cache.
	e2 := newEngine(t, wazero.WithCacheDir(dir))
	r := run(t, compile(t, e2, fixtures.Hello), wasm.RunConfig{Args: []string{"h"}})
	if r.code != 0 || r.err != nil {
		t.Fatalf("run from cache: %+v", r)
	}
	if _, err := wazero.New(context.Background(), wazero.WithCacheDir("/dev/null/x")); err == nil {
		t.Error("New with an unusable cache dir succeeded")
	}
}

func TestImportsRejected(t *testing.T) {
	e := newEngine(t)
	// (module (import "env" "f" (func)))
	mod := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x02\x09\x01\x03env\x01f\x00\x00")
	_, err := e.Compile(context.Background(), mod)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "env.f") {
		t.Fatalf("Compile = %v, want ErrInvalidArgument naming env.f", err)
	}
}

func TestClosedEngine(t *testing.T) {
	e, err := wazero.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := compile(t, e, fixtures.Hello)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lm := compile(t, e, fixtures.Loop)
	running := make(chan int, 1)
	started := make(chan struct{})
	go func() {
		code, _ := lm.Run(ctx, wasm.RunConfig{Started: func(wasm.Instance) { close(started) }})
		running <- code
	}()
	select {
	case <-started:
	case code := <-running:
		t.Fatalf("the loop exited %d before Close", code)
	case <-time.After(time.Minute):
		t.Fatal("the loop did not start within a minute")
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case code := <-running:
		if code != wasm.ExitKilled {
			t.Errorf("instance running at Close exited %d, want %d", code, wasm.ExitKilled)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a running instance survived Close")
	}
	if _, err := e.Compile(context.Background(), fixtures.Hello); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Compile after Close = %v, want ErrFailedPrecondition", err)
	}
	if _, err := m.Run(context.Background(), wasm.RunConfig{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Run after Close = %v, want ErrFailedPrecondition", err)
	}
}

// TestSymlinksConfined checks that symlinks in a mount, whether the guest
// made them or they came with the directory, resolve inside the mount as if
// it were the root: a guest cannot read host files through them.
func TestStarted(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.WASI)
	views := make(chan wasm.Instance, 2)
	block := blockingReader{make(chan struct{})}
	done := make(chan result, 1)
	go func() {
		code, err := m.Run(context.Background(), wasm.RunConfig{
			Args:    []string{"w", "idle"},
			Stdin:   block,
			Started: func(i wasm.Instance) { views <- i },
		})
		done <- result{code: code, err: err}
	}()
	var inst wasm.Instance
	select {
	case inst = <-views:
	case <-time.After(5 * time.Second):
		t.Fatal("Started was not called")
	}
	waitUntil(t, func() bool { return inst.MemoryBytes() >= m.MinMemoryBytes() })
	if got := inst.MemoryBytes(); got == 0 || got%65536 != 0 {
		t.Errorf("MemoryBytes = %d, want a non-zero page multiple", got)
	}
	close(block.ch)
	if r := <-done; r.err != nil || r.code != 0 {
		t.Fatalf("Run = %d, %v", r.code, r.err)
	}
	if len(views) != 0 {
		t.Error("Started was called more than once")
	}

	// Growth shows in the view, and without a limit it is not capped.
	r := compile(t, e, fixtures.Reactor)
	var grown wasm.Instance
	code, err := r.Run(context.Background(), wasm.RunConfig{Function: "grow", Started: func(i wasm.Instance) { grown = i }})
	if err != nil || code != 0 {
		t.Fatalf("grow with Started and no limit = %d, %v; want 0", code, err)
	}
	if grown == nil {
		t.Fatal("Started was not called for the reactor")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMountChecked: a mount whose host directory is missing or is not a
// directory fails the run before the guest starts, with the kind that says
// which.
func TestMountChecked(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.Hello)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		host string
		want error
	}{
		{"directory", dir, nil},
		{"missing", filepath.Join(dir, "missing"), errdefs.ErrNotFound},
		{"file", file, errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code, err := m.Run(context.Background(), wasm.RunConfig{Args: []string{"hello"}, Stdout: &out,
				Mounts: []wasm.Mount{{HostPath: tc.host, GuestPath: "/data"}}})
			if tc.want == nil {
				if err != nil || code != 0 || !strings.HasPrefix(out.String(), fixtures.HelloGreeting) {
					t.Fatalf("run: %d, %v, %q", code, err, out.String())
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.host) || out.Len() != 0 {
				t.Fatalf("run with mount %s: %d, %v (output %q), want %v naming it before the guest runs", tc.host, code, err, out.String(), tc.want)
			}
		})
	}
}
