package runspec_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/runspec"
)

// rootfs builds:
//
//	/app/m.wasm            regular file
//	/app/link.wasm  -> m.wasm
//	/bin/abs.wasm   -> /app/m.wasm   (absolute link, resolved inside root)
//	/app/esc.wasm   -> ../../../../etc/passwd
//	/app/dir/              directory
func rootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"app/dir", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"app/m.wasm", "app/odd#name.wasm"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("\x00asm"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(root, "app/fifo.wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"app/link.wasm": "m.wasm", "bin/abs.wasm": "/app/m.wasm", "app/esc.wasm": "../../../../etc/passwd"}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func i64(v int64) *int64 { return &v }

// fileID is the FileID of the file at p.
func fileID(t *testing.T, p string) runspec.FileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return runspec.FileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

func TestFromSpec(t *testing.T) {
	root := rootfs(t)
	data := t.TempDir()
	file := filepath.Join(data, "hosts")
	os.WriteFile(file, nil, 0o644)
	rootMount := wasm.Mount{HostPath: root, GuestPath: "/"}
	module := filepath.Join(root, "app/m.wasm")

	tests := []struct {
		name     string
		spec     specs.Spec
		rootfs   string
		wantPath string
		wantFn   string
		wantCfg  wasm.RunConfig
		wantKind error
		wantMsg  string
	}{
		{
			name:     "plain",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/m.wasm", "a", "b"}, Env: []string{"A=1"}, Cwd: "/app"}},
			rootfs:   root,
			wantPath: module,
			wantCfg:  wasm.RunConfig{Args: []string{"/app/m.wasm", "a", "b"}, Env: []string{"A=1"}, Cwd: "/app", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name:     "function suffix",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/m.wasm#greet", "x"}}},
			rootfs:   root,
			wantPath: module,
			wantFn:   "greet",
			wantCfg:  wasm.RunConfig{Function: "greet", Args: []string{"/app/m.wasm", "x"}, Cwd: "/", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name:     "relative to cwd",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"m.wasm"}, Cwd: "/app/"}},
			rootfs:   root,
			wantPath: module,
			wantCfg:  wasm.RunConfig{Args: []string{"m.wasm"}, Cwd: "/app", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name:     "symlink inside root",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/link.wasm"}}},
			rootfs:   root,
			wantPath: module,
			wantCfg:  wasm.RunConfig{Args: []string{"/app/link.wasm"}, Cwd: "/", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name:     "absolute symlink resolved in root",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/bin/abs.wasm"}}},
			rootfs:   root,
			wantPath: module,
			wantCfg:  wasm.RunConfig{Args: []string{"/bin/abs.wasm"}, Cwd: "/", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name: "mounts, readonly root, memory, open files",
			spec: specs.Spec{
				Process: &specs.Process{Args: []string{"/app/m.wasm"}, Rlimits: []specs.POSIXRlimit{
					{Type: "RLIMIT_CORE", Soft: 5, Hard: 5},
					{Type: "RLIMIT_NOFILE", Soft: 256, Hard: 4096},
				}},
				Root: &specs.Root{Path: "rootfs", Readonly: true},
				Mounts: []specs.Mount{
					{Destination: "/proc", Type: "proc", Source: "proc"},
					{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw"}},
					{Destination: "/cfg/", Source: data, Options: []string{"bind", "ro"}},
					{Destination: "/etc/hosts", Type: "bind", Source: file, Options: []string{"rbind", "ro"}},
					{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs"},
				},
				Linux: &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(64 << 20)}}},
			},
			rootfs:   root,
			wantPath: module,
			wantCfg: wasm.RunConfig{Args: []string{"/app/m.wasm"}, Cwd: "/", MemoryLimit: 64 << 20, OpenFileLimit: 256, Mounts: []wasm.Mount{
				{HostPath: root, GuestPath: "/", ReadOnly: true},
				{HostPath: data, GuestPath: "/data"},
				{HostPath: data, GuestPath: "/cfg", ReadOnly: true},
			}},
		},
		{
			name:     "file name with #",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/odd#name.wasm"}}},
			rootfs:   root,
			wantPath: filepath.Join(root, "app/odd#name.wasm"),
			wantCfg:  wasm.RunConfig{Args: []string{"/app/odd#name.wasm"}, Cwd: "/", Mounts: []wasm.Mount{rootMount}},
		},
		{
			name:    "no rootfs",
			spec:    specs.Spec{Process: &specs.Process{Args: []string{"module.wasm#run"}}},
			wantFn:  "run",
			wantCfg: wasm.RunConfig{Function: "run", Args: []string{"module.wasm"}, Cwd: "/"},
		},
		{name: "no process", spec: specs.Spec{}, wantKind: errdefs.ErrInvalidArgument, wantMsg: "process.args"},
		{name: "empty args", spec: specs.Spec{Process: &specs.Process{}}, wantKind: errdefs.ErrInvalidArgument, wantMsg: "process.args"},
		{name: "only function", spec: specs.Spec{Process: &specs.Process{Args: []string{"#f"}}}, wantKind: errdefs.ErrInvalidArgument, wantMsg: "#f"},
		{name: "relative cwd", spec: specs.Spec{Process: &specs.Process{Args: []string{"m"}, Cwd: "app"}}, wantKind: errdefs.ErrInvalidArgument, wantMsg: "process.cwd"},
		{name: "missing module", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/nope.wasm"}}}, rootfs: root, wantKind: errdefs.ErrNotFound, wantMsg: "/app/nope.wasm"},
		{name: "dotdot escape", spec: specs.Spec{Process: &specs.Process{Args: []string{"/../../etc/passwd"}}}, rootfs: root, wantKind: runspec.ErrEscape, wantMsg: "/../../etc/passwd"},
		{name: "relative dotdot escape", spec: specs.Spec{Process: &specs.Process{Args: []string{"../../../x.wasm"}, Cwd: "/app"}}, rootfs: root, wantKind: runspec.ErrEscape, wantMsg: "../../../x.wasm"},
		{name: "symlink escape", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/esc.wasm"}}}, rootfs: root, wantKind: runspec.ErrEscape, wantMsg: "/app/esc.wasm"},
		{name: "directory", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/dir"}}}, rootfs: root, wantKind: errdefs.ErrInvalidArgument, wantMsg: "not a regular file"},
		{name: "fifo", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/fifo.wasm"}}}, rootfs: root, wantKind: errdefs.ErrInvalidArgument, wantMsg: "not a regular file"},
		{name: "dotdot inside the root", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/dir/../m.wasm"}}}, rootfs: root, wantPath: module,
			wantCfg: wasm.RunConfig{Args: []string{"/app/dir/../m.wasm"}, Cwd: "/", Mounts: []wasm.Mount{rootMount}}},
		{name: "file as directory", spec: specs.Spec{Process: &specs.Process{Args: []string{"/app/m.wasm/x"}}}, rootfs: root, wantKind: errdefs.ErrNotFound, wantMsg: "not a directory"},
		{name: "relative rootfs", spec: specs.Spec{Process: &specs.Process{Args: []string{"/m"}}}, rootfs: "rootfs", wantKind: errdefs.ErrInvalidArgument, wantMsg: "rootfs"},
		{
			name:     "relative mount source",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/m.wasm"}}, Mounts: []specs.Mount{{Destination: "/d", Type: "bind", Source: "data"}}},
			rootfs:   root,
			wantKind: errdefs.ErrInvalidArgument, wantMsg: "mounts[0]",
		},
		{
			name: "relative destinations are preopen names (wasmtime's --dir .)",
			spec: specs.Spec{Process: &specs.Process{Args: []string{"m.wasm"}}, Mounts: []specs.Mount{
				{Destination: ".", Type: "bind", Source: data},
				{Destination: "./sub/", Type: "bind", Source: data, Options: []string{"ro"}},
			}},
			wantCfg: wasm.RunConfig{Args: []string{"m.wasm"}, Cwd: "/", Mounts: []wasm.Mount{
				{HostPath: data, GuestPath: "."},
				{HostPath: data, GuestPath: "sub", ReadOnly: true},
			}},
		},
		{
			name:     "relative destination leaving",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"m.wasm"}}, Mounts: []specs.Mount{{Destination: "../up", Type: "bind", Source: data}}},
			wantKind: errdefs.ErrInvalidArgument, wantMsg: "mounts[0]",
		},
		{
			name:     "missing mount source",
			spec:     specs.Spec{Process: &specs.Process{Args: []string{"/app/m.wasm"}}, Mounts: []specs.Mount{{Destination: "/d", Type: "bind", Source: "/nonexistent/kuasar"}}},
			rootfs:   root,
			wantKind: errdefs.ErrNotFound, wantMsg: "/nonexistent/kuasar",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// FromSpecOpen finds the same file (opened), function and
			// configuration, and fails the same way.
			f, fn, cfg, err := runspec.FromSpecOpen(&tc.spec, tc.rootfs)
			if tc.wantKind != nil {
				if f != nil || !errors.Is(err, tc.wantKind) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("FromSpecOpen: file %v, err = %v, want %v mentioning %q", f, err, tc.wantKind, tc.wantMsg)
				}
			} else if err != nil {
				t.Errorf("FromSpecOpen: %v", err)
			} else {
				if (f == nil) != (tc.wantPath == "") {
					t.Errorf("FromSpecOpen: file %v, want one for %q", f, tc.wantPath)
				}
				if f != nil {
					if want := fileID(t, tc.wantPath); f.ID() != want {
						t.Errorf("FromSpecOpen opened %+v, want %s (%+v)", f.ID(), tc.wantPath, want)
					}
					if b, err := f.ReadAll(); err != nil || string(b) != "\x00asm" {
						t.Errorf("FromSpecOpen's file reads %q, %v", b, err)
					}
					f.Close()
				}
				if fn != tc.wantFn || !reflect.DeepEqual(cfg, tc.wantCfg) {
					t.Errorf("FromSpecOpen: function %q, cfg = %+v\nwant %q, %+v", fn, cfg, tc.wantFn, tc.wantCfg)
				}
			}

			p, fn, cfg, err := runspec.FromSpec(&tc.spec, tc.rootfs)
			if tc.wantKind != nil {
				if !errors.Is(err, tc.wantKind) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("err = %v, want %v mentioning %q", err, tc.wantKind, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p != tc.wantPath || fn != tc.wantFn {
				t.Errorf("path, function = %q, %q; want %q, %q", p, fn, tc.wantPath, tc.wantFn)
			}
			if !reflect.DeepEqual(cfg, tc.wantCfg) {
				t.Errorf("cfg = %+v\nwant  %+v", cfg, tc.wantCfg)
			}
		})
	}
}

func TestSplitFunction(t *testing.T) {
	for in, want := range map[string][2]string{
		"/a.wasm":     {"/a.wasm", ""},
		"/a.wasm#run": {"/a.wasm", "run"},
		"/a#b.wasm#f": {"/a#b.wasm", "f"},
		"/a.wasm#":    {"/a.wasm", ""},
		"":            {"", ""},
	} {
		p, f := runspec.SplitFunction(in)
		if p != want[0] || f != want[1] {
			t.Errorf("SplitFunction(%q) = %q, %q; want %q, %q", in, p, f, want[0], want[1])
		}
	}
}

func ExampleFromSpec() {
	root, _ := os.MkdirTemp("", "rootfs")
	defer os.RemoveAll(root)
	os.WriteFile(filepath.Join(root, "app.wasm"), []byte("\x00asm\x01\x00\x00\x00"), 0o644)
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"/app.wasm#serve", "--port", "80"}, Env: []string{"MODE=prod"}}}
	path, fn, cfg, err := runspec.FromSpec(spec, root)
	fmt.Println(filepath.Base(path), fn, cfg.Args, cfg.Env, cfg.Mounts[0].GuestPath, err)
	// Output: app.wasm serve [/app.wasm --port 80] [MODE=prod] / <nil>
}

// TestReadModule checks that ReadModule reads through the rootfs's directory
// fd: a path that has become a symlink out of the root meanwhile is resolved
// inside the root, and paths outside the root, directories and missing files
// are refused.
func TestReadModule(t *testing.T) {
	root := rootfs(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "m.wasm"), []byte("host file"), 0o644); err != nil {
		t.Fatal(err)
	}
	// /swapped was resolved as a directory; now it is a link to the host.
	if err := os.Symlink(outside, filepath.Join(root, "swapped")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		want     string
		wantKind error
	}{
		{name: "module", path: filepath.Join(root, "app/m.wasm"), want: "\x00asm"},
		{name: "absolute link inside", path: filepath.Join(root, "bin/abs.wasm"), want: "\x00asm"},
		{name: "swapped to a host link", path: filepath.Join(root, "swapped/m.wasm"), wantKind: errdefs.ErrNotFound},
		{name: "escaping link", path: filepath.Join(root, "app/esc.wasm"), wantKind: errdefs.ErrNotFound},
		{name: "outside the root", path: filepath.Join(outside, "m.wasm"), wantKind: runspec.ErrEscape},
		{name: "directory", path: filepath.Join(root, "app/dir"), wantKind: errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := runspec.ReadModule(root, tc.path)
			if tc.wantKind != nil {
				if !errors.Is(err, tc.wantKind) {
					t.Fatalf("ReadModule(%s) = %q, %v, want %v", tc.path, b, err, tc.wantKind)
				}
				return
			}
			if err != nil || string(b) != tc.want {
				t.Fatalf("ReadModule(%s) = %q, %v, want %q", tc.path, b, err, tc.want)
			}
		})
	}
}
