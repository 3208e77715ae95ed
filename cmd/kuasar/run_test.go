package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
)

// TestMain removes the temporary directories the helpers below share across
// tests (built binaries, fixture files) once every test has run. A test
// binary re-executed as the peak-RSS helper (run_limits_test.go) only runs
// its command.
func TestMain(m *testing.M) {
	if os.Getenv(rssHelperEnv) != "" {
		os.Exit(rssHelper(os.Args[1:]))
	}
	if os.Getenv(chfake.Env) == "1" { // the fake Cloud Hypervisor (templates_ch_test.go)
		os.Exit(chfake.Serve(os.Args[1:]))
	}
	code := m.Run()
	sharedTemp.Range(func(dir, _ any) bool {
		os.RemoveAll(dir.(string))
		return true
	})
	os.Exit(code)
}

// sharedTemp holds the temporary directories shared by the whole test binary.
var sharedTemp sync.Map

// sharedTempDir makes a temporary directory that TestMain removes.
func sharedTempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err == nil {
		sharedTemp.Store(dir, true)
	}
	return dir, err
}

// fixtureDir writes every fixture to a temp dir once per test binary.
var fixtureDir = sync.OnceValues(func() (string, error) {
	dir, err := sharedTempDir("kuasar-fixtures")
	if err != nil {
		return "", err
	}
	for _, n := range fixtures.Names() {
		if _, err := fixtures.WriteFile(dir, n); err != nil {
			return "", err
		}
	}
	return dir, nil
})

func fixture(t testing.TB, name string) string {
	t.Helper()
	dir, err := fixtureDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name+".wasm")
}

// kuasarBinary builds cmd/kuasar once per test binary.
var kuasarBinary = sync.OnceValues(func() (string, error) {
	dir, err := sharedTempDir("kuasar-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kuasar")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{err, out}
	}
	return bin, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return e.err.Error() + ": " + string(e.out) }

func binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the kuasar binary; -short runs unit tests only")
	}
	bin, err := kuasarBinary()
	if err != nil {
		t.Fatalf("go build ./cmd/kuasar: %v", err)
	}
	return bin
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// runInProcess runs `kuasar ARGS...` through runCLI.
func runInProcess(t testing.TB, stateDir, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, stateDir: stateDir}
	code := runCLI(context.Background(), env, args)
	return cliResult{code, out.String(), errb.String()}
}

// runProcess runs a command as a child process.
func runProcess(t testing.TB, env []string, stdin string, name string, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cliResult{code, out.String(), errb.String()}
}

func TestRunCLI(t *testing.T) {
	state := t.TempDir()
	data := t.TempDir()
	ro := t.TempDir()
	os.WriteFile(filepath.Join(ro, "f.txt"), []byte("ro data"), 0o644)
	hello, wasi := fixture(t, "hello"), fixture(t, "wasi")
	t.Setenv("KUASAR_TEST_INHERIT", "inherited")
	// Each run's bundle and FIFOs go to a private directory here.
	runtime := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", runtime)

	tests := []struct {
		name      string
		args      []string
		stdin     string
		wantCode  int
		wantOut   string
		wantErr   string
		wantFile  string
		wantData  string
		checkFile func(t *testing.T)
	}{
		{name: "hello", args: []string{hello}, wantOut: "hello from wasm\nargv[0]=hello.wasm\n"},
		{name: "args after --", args: []string{hello, "--", "-x", "y"}, wantOut: "hello from wasm\nargv[0]=hello.wasm\nargv[1]=-x\nargv[2]=y\n"},
		{name: "args without --", args: []string{hello, "a"}, wantOut: "hello from wasm\nargv[0]=hello.wasm\nargv[1]=a\n"},
		{name: "env", args: []string{"--env", "A=1", "--env", "B=2", "--env", "A=3", wasi, "env"}, wantOut: "A=3\nB=2\n"},
		{name: "env inherit", args: []string{"--env", "KUASAR_TEST_INHERIT", "--env", "KUASAR_TEST_UNSET_XYZ", wasi, "env"}, wantOut: "KUASAR_TEST_INHERIT=inherited\n"},
		{name: "stdin", args: []string{wasi, "cat"}, stdin: "piped\n", wantOut: "piped\n"},
		{name: "exit code", args: []string{wasi, "exit", "9"}, wantCode: 9},
		{name: "proc_exit", args: []string{fixture(t, "exitcode")}, wantCode: 42},
		{name: "function", args: []string{fixture(t, "reactor") + "#greet"}, wantOut: "hello from greet\n"},
		{name: "missing function", args: []string{hello + "#nope"}, wantCode: 127, wantErr: `"nope"`},
		{name: "trap", args: []string{fixture(t, "reactor") + "#trap"}, wantCode: 137, wantErr: "trapped"},
		{name: "dir rw", args: []string{"--dir", data + ":/data", wasi, "write", "/data/out", "hi"}, wantFile: filepath.Join(data, "out"), wantData: "hi"},
		{name: "dir default guest path", args: []string{"--dir", data, wasi, "read", data + "/out"}, wantOut: "hi"},
		{name: "dir ro read", args: []string{"--dir", ro + ":/ro:ro", wasi, "read", "/ro/f.txt"}, wantOut: "ro data"},
		{name: "dir ro write fails", args: []string{"--dir", ro + ":/ro:ro", wasi, "write", "/ro/new", "x"}, wantCode: 1, wantErr: "/ro/new"},
		{name: "workdir sets PWD", args: []string{"--workdir", "/data", "--dir", data + ":/data", wasi, "getenv", "PWD"}, wantOut: "/data\n"},
		{name: "memory limit", args: []string{"--memory", "32Mi", fixture(t, "bigmem")}, wantCode: 125, wantErr: "memory limit is 33554432 bytes"},
		{name: "memory ok", args: []string{"--memory", "64Mi", fixture(t, "bigmem")}},
		{name: "memory grow refused", args: []string{"--memory", "100M", fixture(t, "reactor") + "#grow"}, wantCode: 1},
		{name: "timeout", args: []string{"--timeout", "100ms", fixture(t, "loop")}, wantCode: 137, wantErr: "--timeout 100ms"},
		{name: "not wasm", args: []string{fixture(t, "notwasm")}, wantCode: 125, wantErr: "not a WebAssembly module"},
		{name: "truncated", args: []string{fixture(t, "truncated")}, wantCode: 125, wantErr: "invalid WebAssembly module"},
		{name: "missing file", args: []string{"/nonexistent/x.wasm"}, wantCode: 125, wantErr: "/nonexistent/x.wasm: no such file"},
		{name: "vm isolation", args: []string{"--isolation", "vm", hello}, wantCode: 125, wantErr: "has no filesystem layers to boot a VM with"},
		{name: "quark isolation", args: []string{"--isolation", "quark", hello}, wantCode: 125, wantErr: "has no filesystem layers to run in Quark"},
		{name: "bad isolation", args: []string{"--isolation", "docker", hello}, wantCode: 125, wantErr: "unknown isolation"},
		{name: "wasm isolation", args: []string{"--isolation", "wasm", hello}, wantOut: "hello from wasm\nargv[0]=hello.wasm\n"},
		{name: "bad engine", args: []string{"--engine", "v8", hello}, wantCode: 125, wantErr: `"v8" is not available`},
		{name: "bad memory", args: []string{"--memory", "lots", hello}, wantCode: 125, wantErr: "not a size"},
		{name: "bad dir", args: []string{"--dir", "/nonexistent/kuasar:/x", hello}, wantCode: 125, wantErr: "/nonexistent/kuasar"},
		{name: "relative guest dir", args: []string{"--dir", data + ":rel", hello}, wantCode: 125, wantErr: "must be absolute"},
		{name: "bad env", args: []string{"--env", "=x", hello}, wantCode: 125, wantErr: "missing the variable name"},
		{name: "relative workdir", args: []string{"--workdir", "app", hello}, wantCode: 125, wantErr: "absolute"},
		{name: "no target", args: nil, wantCode: 125, wantErr: "missing TARGET"},
		{name: "invoke", args: []string{"--invoke", "greet", fixture(t, "reactor")}, wantOut: "hello from greet\n"},
		{name: "invoke and #func agree", args: []string{"--invoke", "greet", fixture(t, "reactor") + "#greet"}, wantOut: "hello from greet\n"},
		{name: "invoke and #func differ", args: []string{"--invoke", "trap", fixture(t, "reactor") + "#greet"}, wantCode: 125, wantErr: "name different functions"},
		{name: "invoke missing", args: []string{"--invoke", "nope", hello}, wantCode: 127, wantErr: `"nope"`},
		{name: "short aliases", args: []string{"-e", "A=1", "-w", "/data", "-v", data + ":/data", "-m", "64Mi", wasi, "getenv", "A"}, wantOut: "1\n"},
		{name: "lower-case m refused", args: []string{"-m", "64m", hello}, wantCode: 125, wantErr: "write 64Mi (powers of 1024) or 64M"},
		{name: "one-dash long flag", args: []string{"-memory", "64Mi", hello}, wantCode: 125, wantErr: "write --memory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runInProcess(t, state, tc.stdin, append([]string{"run"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if r.stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.wantOut)
			}
			if !strings.Contains(r.stderr, tc.wantErr) || (tc.wantErr == "" && r.stderr != "") {
				t.Errorf("stderr = %q, want %q", r.stderr, tc.wantErr)
			}
			if tc.wantFile != "" {
				if b, err := os.ReadFile(tc.wantFile); err != nil || string(b) != tc.wantData {
					t.Errorf("%s = %q, %v; want %q", tc.wantFile, b, err, tc.wantData)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); !os.IsNotExist(err) {
		t.Errorf("a write went through the read-only --dir: %v", err)
	}
	if left, _ := os.ReadDir(runtime); len(left) != 0 {
		t.Errorf("runs left their private directories (bundle, FIFOs) behind: %v", left)
	}
	entries, _ := os.ReadDir(filepath.Join(state, "cache", "wazero"))
	if len(entries) == 0 {
		t.Error("kuasar run left no compilation cache under the state dir")
	}
}

// TestRunProcess runs the built binary as a child process: exit codes reach
// the shell and stdio is the process's own.
func TestRunProcess(t *testing.T) {
	bin := binary(t)
	state := []string{"KUASAR_STATE_DIR=" + t.TempDir()}
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "hello", args: []string{"run", fixture(t, "hello"), "x"}, wantOut: "hello from wasm\nargv[0]=hello.wasm\nargv[1]=x\n"},
		{name: "cat", args: []string{"run", fixture(t, "wasi"), "cat"}, stdin: "abc", wantOut: "abc"},
		{name: "exit", args: []string{"run", fixture(t, "wasi"), "--", "exit", "3"}, wantCode: 3},
		{name: "timeout", args: []string{"run", "--timeout", "100ms", fixture(t, "wasi"), "sleep", "100"}, wantCode: 137, wantErr: "timeout"},
		{name: "not wasm", args: []string{"run", fixture(t, "notwasm")}, wantCode: 125, wantErr: "not a WebAssembly module"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runProcess(t, state, tc.stdin, bin, tc.args...)
			if r.code != tc.wantCode || r.stdout != tc.wantOut || !strings.Contains(r.stderr, tc.wantErr) {
				t.Errorf("got code %d stdout %q stderr %q; want %d %q %q", r.code, r.stdout, r.stderr, tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

// TestRunSignal signals a running `kuasar run`: the exit code is 128+signal,
// as for a killed Linux process.
func TestRunSignal(t *testing.T) {
	bin := binary(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		want int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			state := t.TempDir()
			cmd := exec.Command(bin, "run", fixture(t, "loop"))
			cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+state)
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The guest runs once the module is compiled, which is when
			// its cache entry appears.
			waitFor(t, func() bool {
				entries, _ := filepath.Glob(filepath.Join(state, "cache", "wazero", "*"))
				return len(entries) > 0
			})
			cmd.Process.Signal(tc.sig)
			err := cmd.Wait()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != tc.want {
				t.Fatalf("after %v: %v (stderr %q), want exit code %d", tc.sig, err, errb.String(), tc.want)
			}
		})
	}
}

func TestParseDir(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		in        string
		wantGuest string
		wantRO    bool
		ok        bool
	}{
		{dir, dir, false, true},
		{dir + ":/g", "/g", false, true},
		{dir + ":/g:ro", "/g", true, true},
		{dir + ":/g:rw", "/g", false, true},
		{dir + ":ro", dir, true, true},
		{dir + ":g", "", false, false},
		{dir + ":/a:/b:ro", "", false, false},
		{":/g", "", false, false},
		{filepath.Join(dir, "missing") + ":/g", "", false, false},
	}
	for _, tc := range tests {
		m, err := parseDir(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("parseDir(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (m.HostPath != dir || m.GuestPath != tc.wantGuest || m.ReadOnly != tc.wantRO) {
			t.Errorf("parseDir(%q) = %+v", tc.in, m)
		}
	}
}

// waitFor polls cond for up to a minute (a deadline for a loaded machine;
// cond itself is the event waited for).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// TestRunKilledLeavesNothing: a Wasm run's private directory (bundle,
// FIFOs) is gone as soon as the guest runs, so even a SIGKILL of kuasar,
// which no defer survives, leaves nothing in the runtime directory.
func TestRunKilledLeavesNothing(t *testing.T) {
	bin := binary(t)
	runtime := t.TempDir()
	cmd := exec.Command(bin, "run", fixture(t, "loop"))
	cmd.Env = append(os.Environ(), "KUASAR_STATE_DIR="+t.TempDir(), "XDG_RUNTIME_DIR="+runtime)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	// The guest runs (it loops until killed) once kuasar holds its stdout
	// FIFO, which lived in the run's directory and is unlinked by then.
	fds := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "fd")
	waitFor(t, func() bool {
		ents, _ := os.ReadDir(fds)
		for _, e := range ents {
			if l, _ := os.Readlink(filepath.Join(fds, e.Name())); strings.HasPrefix(l, runtime+"/") && strings.HasSuffix(l, "/stdout (deleted)") {
				return true
			}
		}
		return false
	})
	if left, _ := os.ReadDir(runtime); len(left) != 0 {
		t.Errorf("the running guest's run directory is still there: %v", left)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("kuasar exited before it was killed: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if left, _ := os.ReadDir(runtime); len(left) != 0 {
		t.Errorf("a killed run left %v behind", left)
	}
}
