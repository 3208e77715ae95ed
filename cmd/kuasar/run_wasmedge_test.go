//go:build wasmedge

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// wasmedgeCLI is the command that runs WasmEdge's own CLI: $KUASAR_WASMEDGE_CLI
// (a command line, split on spaces; `make test-wasmedge` sets it to the
// Debian 13 root's wasmedge through the root's loader), else wasmedge
// from PATH.
func wasmedgeCLI(t *testing.T) []string {
	if c := os.Getenv("KUASAR_WASMEDGE_CLI"); c != "" {
		return strings.Fields(c)
	}
	p, err := exec.LookPath("wasmedge")
	if err != nil {
		t.Skip("no WasmEdge CLI: set KUASAR_WASMEDGE_CLI or put wasmedge in PATH (make test-wasmedge does)")
	}
	return []string{p}
}

// TestWasmEdgeCLIParity runs the same invocations through
// `kuasar run --engine wasmedge` and WasmEdge's own CLI (`wasmedge --dir
// GUEST:HOST[:readonly] --env K=V MODULE ARGS`) and requires identical
// stdout, stderr, exit code and effects on the mounted directories.
func TestWasmEdgeCLIParity(t *testing.T) {
	cli := wasmedgeCLI(t)
	state := t.TempDir()
	type dir struct {
		guest string
		ro    bool
		files map[string]string
	}
	tests := []struct {
		name   string
		module string
		dirs   []dir
		env    []string
		args   []string
		stdin  string
	}{
		{name: "hello", module: "hello"},
		{name: "hello args", module: "hello", args: []string{"a", "b c", "--flag"}},
		{name: "hello env", module: "hello", env: []string{"A=1", "B=two words", "C="}},
		{name: "args", module: "wasi", args: []string{"args", "x", "", "ü"}},
		{name: "env", module: "wasi", args: []string{"env"}, env: []string{"K=V", "PATH=/bin"}},
		{name: "getenv missing", module: "wasi", args: []string{"getenv", "NOPE"}},
		{name: "stdin cat", module: "wasi", args: []string{"cat"}, stdin: "line one\nline two\n\x00binary\n"},
		{name: "stdin empty", module: "wasi", args: []string{"cat"}},
		{name: "stderr", module: "wasi", args: []string{"stderr", "to stderr"}},
		{name: "exit 0", module: "wasi", args: []string{"exit", "0"}},
		{name: "exit 5", module: "wasi", args: []string{"exit", "5"}},
		{name: "exit 255", module: "wasi", args: []string{"exit", "255"}},
		{name: "proc_exit wat", module: "exitcode"},
		{name: "usage error", module: "wasi"},
		{name: "read rw mount", module: "wasi", args: []string{"read", "/data/in.txt"}, dirs: []dir{{guest: "/data", files: map[string]string{"in.txt": "content\n"}}}},
		{name: "read ro mount", module: "wasi", args: []string{"read", "/ro/in.txt"}, dirs: []dir{{guest: "/ro", ro: true, files: map[string]string{"in.txt": "ro content\n"}}}},
		{name: "write rw mount", module: "wasi", args: []string{"write", "/data/out.txt", "new"}, dirs: []dir{{guest: "/data"}}},
		{name: "write ro mount", module: "wasi", args: []string{"write", "/ro/out.txt", "new"}, dirs: []dir{{guest: "/ro", ro: true}}},
		{name: "append", module: "wasi", args: []string{"append", "/data/f", "+more"}, dirs: []dir{{guest: "/data", files: map[string]string{"f": "start"}}}},
		{name: "ls", module: "wasi", args: []string{"ls", "/data"}, dirs: []dir{{guest: "/data", files: map[string]string{"b": "", "a": "", "sub/c": ""}}}},
		{name: "ls root mount", module: "wasi", args: []string{"ls", "/"}, dirs: []dir{{guest: "/", files: map[string]string{"x": ""}}}},
		{name: "mkdir", module: "wasi", args: []string{"mkdir", "/data/new"}, dirs: []dir{{guest: "/data"}}},
		{name: "mkdir ro", module: "wasi", args: []string{"mkdir", "/ro/new"}, dirs: []dir{{guest: "/ro", ro: true}}},
		{name: "rm", module: "wasi", args: []string{"rm", "/data/f"}, dirs: []dir{{guest: "/data", files: map[string]string{"f": "x"}}}},
		{name: "rm ro", module: "wasi", args: []string{"rm", "/ro/f"}, dirs: []dir{{guest: "/ro", ro: true, files: map[string]string{"f": "x"}}}},
		{name: "stat", module: "wasi", args: []string{"stat", "/data/f"}, dirs: []dir{{guest: "/data", files: map[string]string{"f": "12345"}}}},
		{name: "no mount", module: "wasi", args: []string{"read", "/etc/hostname"}},
		{name: "two mounts", module: "wasi", args: []string{"read", "/b/f"}, dirs: []dir{{guest: "/a", files: map[string]string{"f": "a"}}, {guest: "/b", ro: true, files: map[string]string{"f": "b"}}}},
		{name: "clock", module: "wasi", args: []string{"clock"}},
		{name: "random", module: "wasi", args: []string{"random"}},
		// The WASI behaviours wasispec checks (links, timestamps, rights,
		// poll, renumber...): whatever WasmEdge's CLI gets right, kuasar
		// on WasmEdge must too, and the same way.
		{name: "wasispec", module: "wasispec", args: []string{"/w"}, stdin: "ping", dirs: []dir{{guest: "/w"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var kArgs, wArgs []string
			var kDirs, wDirs []string
			for _, d := range tc.dirs {
				kd, wd := t.TempDir(), t.TempDir()
				for name, content := range d.files {
					for _, root := range []string{kd, wd} {
						p := filepath.Join(root, name)
						os.MkdirAll(filepath.Dir(p), 0o755)
						if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
							t.Fatal(err)
						}
					}
				}
				ksuffix, wsuffix := "", ""
				if d.ro {
					ksuffix, wsuffix = ":ro", ":readonly"
				}
				kArgs = append(kArgs, "--dir", kd+":"+d.guest+ksuffix)
				wArgs = append(wArgs, "--dir", d.guest+":"+wd+wsuffix)
				kDirs, wDirs = append(kDirs, kd), append(wDirs, wd)
			}
			for _, e := range tc.env {
				kArgs = append(kArgs, "--env", e)
				wArgs = append(wArgs, "--env", e)
			}
			module := fixture(t, tc.module)
			kArgs = append(append(append([]string{"run", "--engine", "wasmedge"}, kArgs...), module, "--"), tc.args...)
			wArgs = append(append(append(cli[1:], wArgs...), module), tc.args...)

			k := runInProcess(t, state, tc.stdin, kArgs...)
			w := runProcess(t, nil, tc.stdin, cli[0], wArgs...)
			if k != w {
				t.Errorf("kuasar run --engine wasmedge and wasmedge differ:\nkuasar:   code %d stdout %q stderr %q\nwasmedge: code %d stdout %q stderr %q",
					k.code, k.stdout, k.stderr, w.code, w.stdout, w.stderr)
			}
			for i := range kDirs {
				if kt, wt := tree(t, kDirs[i]), tree(t, wDirs[i]); kt != wt {
					t.Errorf("mount %s differs afterwards:\nkuasar:   %s\nwasmedge: %s", tc.dirs[i].guest, kt, wt)
				}
			}
		})
	}
}

// TestWasmEdgeEngineFlag: the wasmedge engine is selected by --engine and
// reports the guest's exit code.
func TestWasmEdgeEngineFlag(t *testing.T) {
	r := runInProcess(t, t.TempDir(), "", "run", "--engine", "wasmedge", fixture(t, "wasi"), "--", "exit", "9")
	if r.code != 9 {
		t.Fatalf("kuasar run --engine wasmedge exit 9 = %d (stderr %q)", r.code, r.stderr)
	}
}
