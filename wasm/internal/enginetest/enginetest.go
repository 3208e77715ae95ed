// Package enginetest is the conformance suite every wasm.Engine runs: the same
// modules and inputs must give the same exit codes, output, effects and error
// kinds on each engine. Where an engine is allowed to differ, the difference
// is declared once in Departures, next to its reason, instead of in a copy of
// the tables.
package enginetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
)

// Departures lists where an engine may differ from the reference (kuasar's
// own WASI host on wazero). Each is a documented property of the engine, not
// a bug being hidden: the suite still checks that nothing outside a mount is
// reached and that the error kind is the same.
type Departures struct {
	// NoSnapshot0 is set when the engine serves only wasi_snapshot_preview1,
	// so modules importing wasi_unstable (snapshot 0) are not run.
	NoSnapshot0 bool
	// PlainSizes is set when memory-limit errors give sizes in bytes only,
	// without the MiB figure.
	PlainSizes bool
	// RefusesEscapingSymlinks is set when the engine refuses (EPERM) a
	// symlink that is absolute or climbs above its mount, where the reference
	// resolves it inside the mount as if the mount were "/".
	RefusesEscapingSymlinks bool
}

// Run runs the whole suite as subtests of t on one engine from newEngine,
// which must register the engine's Close with t.Cleanup.
func Run(t *testing.T, newEngine func(testing.TB) wasm.Engine, d Departures) {
	e := newEngine(t)
	t.Run("WASI", func(t *testing.T) { runWASI(t, e) })
	t.Run("Modules", func(t *testing.T) { runModules(t, e, d) })
	t.Run("CompileOnce", func(t *testing.T) { compileOnce(t, newEngine(t)) })
	t.Run("Cancel", func(t *testing.T) { cancelRuns(t, e) })
	t.Run("SymlinksConfined", func(t *testing.T) { symlinksConfined(t, e, d) })
}

type result struct {
	code           int
	err            error
	stdout, stderr string
}

func compile(t testing.TB, e wasm.Engine, b []byte) wasm.Module {
	t.Helper()
	m, err := e.Compile(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func run(t testing.TB, m wasm.Module, cfg wasm.RunConfig) result {
	t.Helper()
	var out, errb bytes.Buffer
	cfg.Stdout, cfg.Stderr = &out, &errb
	code, err := m.Run(context.Background(), cfg)
	return result{code, err, out.String(), errb.String()}
}

func runWASI(t *testing.T, e wasm.Engine) {
	m := compile(t, e, fixtures.WASI)

	rw := t.TempDir()
	ro := t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "data.txt"), []byte("read-only data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rw, "b"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(rw, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	mounts := []wasm.Mount{{HostPath: rw, GuestPath: "/data"}, {HostPath: ro, GuestPath: "/ro", ReadOnly: true}}

	tests := []struct {
		name       string
		args       []string
		env        []string
		cwd        string
		stdin      string
		wantCode   int
		wantOut    string
		wantErr    string // substring of stderr
		wantFile   string // file under rw that must hold wantData afterwards
		wantData   string
		wantAbsent string // file under ro that must not exist afterwards
	}{
		{name: "args", args: []string{"wasi.wasm", "args", "a b", "c"}, wantOut: "wasi.wasm\nargs\na b\nc\n"},
		{name: "argv0 kept as given", args: []string{"/app/x.wasm", "args"}, wantOut: "/app/x.wasm\nargs\n"},
		{name: "env", args: []string{"w", "env"}, env: []string{"A=1", "B=two=2", "EMPTY="}, wantOut: "A=1\nB=two=2\nEMPTY=\n"},
		{name: "no env", args: []string{"w", "env"}, wantOut: ""},
		{name: "getenv", args: []string{"w", "getenv", "B"}, env: []string{"B=x y"}, wantOut: "x y\n"},
		{name: "cwd default", args: []string{"w", "cwd"}, wantOut: "/\n"},
		{name: "cwd sets PWD", args: []string{"w", "getenv", "PWD"}, cwd: "/data/a", wantOut: "/data/a\n"},
		{name: "explicit PWD wins", args: []string{"w", "getenv", "PWD"}, cwd: "/data", env: []string{"PWD=/x"}, wantOut: "/x\n"},
		{name: "stdin cat", args: []string{"w", "cat"}, stdin: "line 1\nline 2\n", wantOut: "line 1\nline 2\n"},
		{name: "stderr", args: []string{"w", "stderr", "oops"}, wantErr: "oops\n"},
		{name: "exit code", args: []string{"w", "exit", "7"}, wantCode: 7},
		{name: "exit 0", args: []string{"w", "exit", "0"}},
		{name: "exit 255", args: []string{"w", "exit", "255"}, wantCode: 255},
		{name: "usage", args: []string{"w"}, wantCode: 2, wantErr: "usage"},
		{name: "read ro mount", args: []string{"w", "read", "/ro/data.txt"}, wantOut: "read-only data\n"},
		{name: "write ro mount fails", args: []string{"w", "write", "/ro/new.txt", "x"}, wantCode: 1, wantErr: "/ro/new.txt", wantAbsent: "new.txt"},
		{name: "write rw mount", args: []string{"w", "write", "/data/out.txt", "written"}, wantFile: "out.txt", wantData: "written"},
		{name: "append rw mount", args: []string{"w", "append", "/data/b", "yz"}, wantFile: "b", wantData: "xyz"},
		{name: "list mount", args: []string{"w", "ls", "/ro"}, wantOut: "data.txt\n"},
		{name: "stat dir", args: []string{"w", "stat", "/data/a"}, wantOut: "dir\n"},
		{name: "mkdir rw", args: []string{"w", "mkdir", "/data/newdir"}},
		{name: "host outside mounts invisible", args: []string{"w", "read", "/etc/passwd"}, wantCode: 1, wantErr: "/etc/passwd"},
		{name: "dotdot does not escape", args: []string{"w", "read", "/data/../../../etc/passwd"}, wantCode: 1},
		{name: "clock", args: []string{"w", "clock"}, wantOut: "ok\n"},
		{name: "random", args: []string{"w", "random"}, wantOut: "ok\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := wasm.RunConfig{Args: tc.args, Env: tc.env, Cwd: tc.cwd, Mounts: mounts}
			if tc.stdin != "" {
				cfg.Stdin = strings.NewReader(tc.stdin)
			}
			r := run(t, m, cfg)
			if r.err != nil {
				t.Fatalf("Run: %v", r.err)
			}
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if r.stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.wantOut)
			}
			if !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tc.wantErr)
			}
			if tc.wantFile != "" {
				b, err := os.ReadFile(filepath.Join(rw, tc.wantFile))
				if err != nil || string(b) != tc.wantData {
					t.Errorf("%s = %q, %v; want %q", tc.wantFile, b, err, tc.wantData)
				}
			}
			if tc.wantAbsent != "" {
				if _, err := os.Stat(filepath.Join(ro, tc.wantAbsent)); !os.IsNotExist(err) {
					t.Errorf("%s exists in the read-only mount: %v", tc.wantAbsent, err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(rw, "newdir")); err != nil {
		t.Errorf("mkdir through the rw mount: %v", err)
	}
}

// moduleCase is one module run of runModules and what it must give.
type moduleCase struct {
	name     string
	module   []byte
	cfg      wasm.RunConfig
	wantCode int
	wantOut  string
	wantKind error
	wantMsg  []string
	// wantHuman are further substrings of the error for engines that
	// also give sizes in MiB (not Departures.PlainSizes).
	wantHuman []string
}

func runModules(t *testing.T, e wasm.Engine, d Departures) {
	tests := []moduleCase{
		{name: "hello", module: fixtures.Hello, cfg: wasm.RunConfig{Args: []string{"hello.wasm", "x"}, Env: []string{"K=V"}},
			wantOut: fixtures.HelloGreeting + "\nargv[0]=hello.wasm\nargv[1]=x\nenv K=V\n"},
		{name: "proc_exit", module: fixtures.ExitCode, wantCode: fixtures.ExitCodeValue},
		{name: "function", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "greet"}, wantOut: "hello from greet\n"},
		{name: "function proc_exit", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "fail"}, wantCode: 3},
		{name: "missing _start", module: fixtures.Reactor, wantKind: errdefs.ErrNotFound, wantMsg: []string{`"_start"`, "greet"}},
		{name: "missing function", module: fixtures.Hello, cfg: wasm.RunConfig{Function: "nope"}, wantKind: errdefs.ErrNotFound, wantMsg: []string{`"nope"`, "_start"}},
		{name: "trap", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "trap"}, wantCode: wasm.ExitKilled, wantKind: errdefs.ErrUnknown, wantMsg: []string{"unreachable"}},
		{name: "memory min over limit", module: fixtures.BigMem, cfg: wasm.RunConfig{MemoryLimit: 32 << 20},
			wantKind: errdefs.ErrResourceExhausted, wantMsg: []string{"65536000 bytes", "33554432 bytes"}, wantHuman: []string{"62.5 MiB", "32 MiB"}},
		{name: "memory min under limit", module: fixtures.BigMem, cfg: wasm.RunConfig{MemoryLimit: 64 << 20}},
		{name: "memory grow refused", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "grow", MemoryLimit: 64 << 20}, wantCode: 1},
		{name: "memory grow allowed", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "grow", MemoryLimit: 256 << 20}},
		{name: "memory grow no limit", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "grow"}},
		{name: "bad env", module: fixtures.Hello, cfg: wasm.RunConfig{Env: []string{"NOEQUALS"}}, wantKind: errdefs.ErrInvalidArgument, wantMsg: []string{"NOEQUALS"}},
		{name: "relative cwd", module: fixtures.Hello, cfg: wasm.RunConfig{Cwd: "app"}, wantKind: errdefs.ErrInvalidArgument, wantMsg: []string{`"app"`}},
		{name: "missing mount", module: fixtures.Hello, cfg: wasm.RunConfig{Mounts: []wasm.Mount{{HostPath: "/nonexistent/kuasar", GuestPath: "/x"}}},
			wantKind: errdefs.ErrNotFound, wantMsg: []string{"/nonexistent/kuasar"}},
		{name: "timeout", module: fixtures.Loop, cfg: wasm.RunConfig{Timeout: 50 * time.Millisecond}, wantCode: wasm.ExitKilled},
		{name: "timeout in sleep", module: fixtures.WASI, cfg: wasm.RunConfig{Args: []string{"w", "sleep", "1000"}, Timeout: 50 * time.Millisecond}, wantCode: wasm.ExitKilled},
		{name: "timeout with signal", module: fixtures.Loop, cfg: wasm.RunConfig{Timeout: 20 * time.Millisecond, Signal: func() int { return 15 }}, wantCode: 143},
	}
	if !d.NoSnapshot0 {
		tests = append(tests, moduleCase{name: "wasi_unstable imports", module: fixtures.Unstable, wantCode: 7})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := compile(t, e, tc.module)
			r := run(t, m, tc.cfg)
			if tc.wantKind != nil {
				if !errors.Is(r.err, tc.wantKind) {
					t.Fatalf("err = %v, want kind %v", r.err, tc.wantKind)
				}
				want := tc.wantMsg
				if !d.PlainSizes {
					want = append(want, tc.wantHuman...)
				}
				for _, s := range want {
					if !strings.Contains(r.err.Error(), s) {
						t.Errorf("error %q does not mention %q", r.err, s)
					}
				}
			} else if r.err != nil {
				t.Fatalf("Run: %v", r.err)
			}
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d", r.code, tc.wantCode)
			}
			if r.stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.wantOut)
			}
		})
	}
}

func compileOnce(t *testing.T, e wasm.Engine) {
	var wg sync.WaitGroup
	mods := make([]wasm.Module, 16)
	for i := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := e.Compile(context.Background(), bytes.Clone(fixtures.Hello))
			if err != nil {
				t.Error(err)
			}
			mods[i] = m
		}()
	}
	wg.Wait()
	for _, m := range mods[1:] {
		if m != mods[0] {
			t.Fatal("concurrent compiles of the same bytes returned different modules")
		}
	}
}

// blockingReader blocks until closed, like an idle terminal.
type blockingReader struct{ ch chan struct{} }

func (b blockingReader) Read([]byte) (int, error) { <-b.ch; return 0, io.EOF }

func cancelRuns(t *testing.T, e wasm.Engine) {
	tests := []struct {
		name   string
		module []byte
		cfg    wasm.RunConfig
	}{
		{"loop", fixtures.Loop, wasm.RunConfig{}},
		{"sleep", fixtures.WASI, wasm.RunConfig{Args: []string{"w", "sleep", "1000"}}},
		{"blocked on stdin", fixtures.WASI, wasm.RunConfig{Args: []string{"w", "idle"}, Stdin: blockingReader{make(chan struct{})}}},
		{"spin", fixtures.WASI, wasm.RunConfig{Args: []string{"w", "loop"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := compile(t, e, tc.module)
			ctx, cancel := context.WithCancel(context.Background())
			var sig atomic.Int32
			tc.cfg.Signal = func() int { return int(sig.Load()) }
			done := make(chan result, 1)
			go func() {
				code, err := m.Run(ctx, tc.cfg)
				done <- result{code: code, err: err}
			}()
			select {
			case r := <-done:
				t.Fatalf("returned before cancel: %d, %v", r.code, r.err)
			case <-time.After(100 * time.Millisecond):
			}
			sig.Store(9)
			start := time.Now()
			cancel()
			select {
			case r := <-done:
				if r.err != nil || r.code != 137 {
					t.Fatalf("Run after cancel = %d, %v; want 137, nil", r.code, r.err)
				}
				t.Logf("stopped %v after cancel", time.Since(start))
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of cancel")
			}
		})
	}
}

func symlinksConfined(t *testing.T, e wasm.Engine, d Departures) {
	m := compile(t, e, fixtures.WASI)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc", "name"), []byte("inside"), 0o644)
	// Links shipped with the directory: absolute, and relative climbing out.
	os.Symlink("/etc/name", filepath.Join(dir, "abs"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "hostabs"))
	os.Symlink("../../../../../../../.."+outside+"/secret", filepath.Join(dir, "climb"))
	os.Symlink("/", filepath.Join(dir, "rootlink"))
	escape := "../../../../../../../.." + outside + "/secret"

	tests := []struct {
		name     string
		args     []string
		ro       bool
		wantCode int
		wantOut  string
		// refused names the case for engines with
		// Departures.RefusesEscapingSymlinks, which expect exit 1 and no
		// output instead.
		refused string
	}{
		{name: "absolute link resolves in mount", args: []string{"w", "read", "/data/abs"}, wantOut: "inside", refused: "absolute link refused"},
		{name: "host absolute link stays in mount", args: []string{"w", "read", "/data/hostabs"}, wantCode: 1},
		{name: "climbing link stays in mount", args: []string{"w", "read", "/data/climb"}, wantCode: 1},
		{name: "link to / is the mount", args: []string{"w", "read", "/data/rootlink/etc/name"}, wantOut: "inside", refused: "link to / refused"},
		{name: "read-only mount too", args: []string{"w", "read", "/data/climb"}, ro: true, wantCode: 1},
		{name: "guest-made climbing link", args: []string{"w", "symlink", escape, "/data/made"}},
		{name: "following guest-made link", args: []string{"w", "read", "/data/made"}, wantCode: 1},
		{name: "writing through guest-made link", args: []string{"w", "write", "/data/made", "pwned"}, wantCode: 1},
		{name: "guest-made link clamped at the mount", args: []string{"w", "symlink", "../../../../etc/name", "/data/made2"}},
		{name: "following clamped link", args: []string{"w", "read", "/data/made2"}, wantOut: "inside", refused: "climbing link refused"},
		{name: "stat through link", args: []string{"w", "stat", "/data/abs"}, wantOut: "file 6\n", refused: "stat through absolute link refused"},
		{name: "ls through link", args: []string{"w", "ls", "/data/rootlink/etc"}, wantOut: "name\n", refused: "ls through link to / refused"},
	}
	for _, tc := range tests {
		if d.RefusesEscapingSymlinks && tc.refused != "" {
			tc.name, tc.wantCode, tc.wantOut = tc.refused, 1, ""
		}
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, m, wasm.RunConfig{Args: tc.args, Mounts: []wasm.Mount{{HostPath: dir, GuestPath: "/data", ReadOnly: tc.ro}}})
			if r.err != nil || r.code != tc.wantCode || r.stdout != tc.wantOut {
				t.Errorf("got %d %q (err %v, stderr %q), want %d %q", r.code, r.stdout, r.err, r.stderr, tc.wantCode, tc.wantOut)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "host secret" {
		t.Errorf("the host file outside the mount was changed to %q", b)
	}
}

// TestStarted checks RunConfig.Started: it gets a view of the live instance
// whose memory size can be read from another goroutine while the guest runs.
