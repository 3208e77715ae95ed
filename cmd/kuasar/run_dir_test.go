package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirWasmtimeSemantics runs a real guest (wasi-libc's opendir, open,
// getcwd) with --dir as wasmtime documents it: "--dir HOST_DIR[::GUEST_DIR]:
// grant access of a host directory to a guest. If specified as just
// HOST_DIR then the same directory name on the host is made available
// within the guest"; so `--dir .` preopens the host's current directory
// under the name "." and the guest's `ls .` and relative opens work
// (wasi-libc, whose current directory starts at "/", resolves "." and "/"
// both to that preopen). Docker's -v HOST:GUEST[:ro] sits beside it.
func TestDirWasmtimeSemantics(t *testing.T) {
	wasi := fixture(t, "wasi")
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	state := t.TempDir()
	host := t.TempDir()
	for p, data := range map[string]string{"a.txt": "alpha", "b.txt": "beta", "sub/c.txt": "gamma"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(host, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(host, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "o.txt"), []byte("other"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(host)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		wantFile string // a file the guest wrote, relative to host
	}{
		// wasmtime run --dir . m.wasm: the guest lists and reads its ".".
		{name: "dot ls dot", args: []string{"--dir", ".", wasi, "ls", "."}, wantOut: "a.txt\nb.txt\nsub\n"},
		{name: "dot relative read", args: []string{"--dir", ".", wasi, "read", "sub/c.txt"}, wantOut: "gamma"},
		{name: "dot relative write", args: []string{"--dir", ".", wasi, "write", "new.txt", "written"}, wantFile: "new.txt"},
		{name: "dot cwd stays /", args: []string{"--dir", ".", wasi, "cwd"}, wantOut: "/\n"},
		// The host's absolute path means nothing to the guest now.
		{name: "dot is not the host path", args: []string{"--dir", ".", wasi, "read", filepath.Join(host, "a.txt")}, wantCode: 1, wantErr: "a.txt"},
		// --dir HOST::GUEST: HOST under the name GUEST, absolute or relative.
		{name: "host::absolute", args: []string{"--dir", other + "::/data", wasi, "ls", "/data"}, wantOut: "o.txt\n"},
		{name: "host::absolute read", args: []string{"--dir", other + "::/data", wasi, "read", "/data/o.txt"}, wantOut: "other"},
		{name: "relative host::relative", args: []string{"--dir", "sub::data", wasi, "read", "data/c.txt"}, wantOut: "gamma"},
		{name: "dot::absolute", args: []string{"--dir", ".::/work", wasi, "read", "/work/b.txt"}, wantOut: "beta"},
		{name: "two dirs", args: []string{"--dir", ".", "--dir", other + "::/o", wasi, "read", "/o/o.txt"}, wantOut: "other"},
		// --dir DIR with an absolute DIR: the same path in the guest.
		{name: "absolute dir same name", args: []string{"--dir", other, wasi, "read", filepath.Join(other, "o.txt")}, wantOut: "other"},
		// Nothing outside the preopens.
		{name: "no dir no files", args: []string{wasi, "ls", "."}, wantCode: 1, wantErr: "Capabilities insufficient"},
		{name: "guest name leaving", args: []string{"--dir", other + "::../x", wasi, "ls", "."}, wantCode: 125, wantErr: "leaves the guest's current directory"},
		{name: "host missing", args: []string{"--dir", "nope::/x", wasi, "ls", "/x"}, wantCode: 125, wantErr: "nope"},
		{name: "empty guest", args: []string{"--dir", other + "::", wasi, "ls", "/"}, wantCode: 125, wantErr: "want DIR or HOST::GUEST"},
		// docker's -v: absolute guest path, :ro refuses writes.
		{name: "volume ro read", args: []string{"-v", other + ":/ro:ro", wasi, "read", "/ro/o.txt"}, wantOut: "other"},
		{name: "volume ro write", args: []string{"-v", other + ":/ro:ro", wasi, "write", "/ro/n.txt", "x"}, wantCode: 1, wantErr: "/ro/n.txt"},
		{name: "volume relative guest", args: []string{"-v", other + ":data", wasi, "ls", "data"}, wantCode: 125, wantErr: "must be absolute"},
		{name: "volume wasmtime form", args: []string{"-v", other + "::/data", wasi, "ls", "/data"}, wantCode: 125, wantErr: "want HOST:GUEST[:ro]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runInProcess(t, state, "", append([]string{"run"}, tc.args...)...)
			if r.code != tc.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", r.code, tc.wantCode, r.stderr)
			}
			if tc.wantCode == 0 && r.stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.wantOut)
			}
			if !strings.Contains(r.stderr, tc.wantErr) || (tc.wantErr == "" && r.stderr != "") {
				t.Errorf("stderr = %q, want %q", r.stderr, tc.wantErr)
			}
			if tc.wantFile != "" {
				b, err := os.ReadFile(filepath.Join(host, tc.wantFile))
				if err != nil || string(b) != "written" {
					t.Errorf("%s = %q, %v; want the guest's write", tc.wantFile, b, err)
				}
				os.Remove(filepath.Join(host, tc.wantFile))
			}
		})
	}
}
