package sandboxer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// TestScanBackendDir: reapDir skips the mount table only when nothing can
// be mounted at or below the directory, and finds process records as
// owned does.
func TestScanBackendDir(t *testing.T) {
	canMount := unix.Geteuid() == 0
	for _, tc := range []struct {
		name      string
		setup     func(t *testing.T, dir string) bool // false: skip
		owned     bool
		mountFree bool
		removeDir bool
	}{
		{name: "empty", mountFree: true},
		{name: "files", setup: func(t *testing.T, dir string) bool {
			scanWrite(t, filepath.Join(dir, "wasm-tasks.json"))
			scanWrite(t, filepath.Join(dir, "a", "b", "c"))
			return true
		}, mountFree: true},
		{name: "record", setup: func(t *testing.T, dir string) bool {
			scanWrite(t, filepath.Join(dir, "quark"+procmark.RecordExt))
			return true
		}, owned: true, mountFree: true},
		{name: "record one level down", setup: func(t *testing.T, dir string) bool {
			scanWrite(t, filepath.Join(dir, "vm", "vmm"+procmark.RecordExt))
			return true
		}, owned: true, mountFree: true},
		{name: "record two levels down is not owned", setup: func(t *testing.T, dir string) bool {
			scanWrite(t, filepath.Join(dir, "vm", "x", "vmm"+procmark.RecordExt))
			return true
		}, mountFree: true},
		{name: "missing", removeDir: true, mountFree: true},
		{name: "mount on a subdirectory", setup: func(t *testing.T, dir string) bool {
			return canMount && scanBind(t, t.TempDir(), scanMkdir(t, filepath.Join(dir, "vm", "shared")))
		}},
		{name: "mount on a file", setup: func(t *testing.T, dir string) bool {
			src := filepath.Join(t.TempDir(), "f")
			scanWrite(t, src)
			dst := filepath.Join(dir, "hosts")
			scanWrite(t, dst)
			return canMount && scanBind(t, src, dst)
		}},
		{name: "dir is a mount point", setup: func(t *testing.T, dir string) bool {
			return canMount && scanBind(t, t.TempDir(), dir)
		}},
		{name: "record below a mount", setup: func(t *testing.T, dir string) bool {
			src := t.TempDir()
			scanWrite(t, filepath.Join(src, "vmm"+procmark.RecordExt))
			return canMount && scanBind(t, src, scanMkdir(t, filepath.Join(dir, "vm")))
		}, owned: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			scanMkdir(t, dir)
			if tc.setup != nil && !tc.setup(t, dir) {
				t.Skip("needs root to mount")
			}
			if tc.removeDir {
				os.Remove(dir)
			}
			owned, free := scanBackendDir(dir)
			if owned != tc.owned || free != tc.mountFree {
				t.Fatalf("scanBackendDir = owned %v, mount-free %v; want %v, %v", owned, free, tc.owned, tc.mountFree)
			}
		})
	}
}

func scanWrite(t *testing.T, p string) {
	t.Helper()
	scanMkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func scanMkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// scanBind bind-mounts src on dst until the test ends.
func scanBind(t *testing.T, src, dst string) bool {
	t.Helper()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Logf("bind mount: %v", err)
		return false
	}
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
	return true
}

// TestRemoveDir: the directory goes, whatever it holds beside the files
// named as known.
func TestRemoveDir(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
	}{
		{"empty", nil},
		{"known only", []string{recordFile}},
		{"others", []string{recordFile, "x", "sub/y"}},
		{"known is a directory", []string{recordFile + "/z"}},
		{"missing", []string{"-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			scanMkdir(t, dir)
			for _, f := range tc.files {
				if f == "-" {
					os.Remove(dir)
					continue
				}
				scanWrite(t, filepath.Join(dir, f))
			}
			if err := removeDir(dir, recordFile); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Fatalf("%s still there: %v", dir, err)
			}
		})
	}
}

// TestReapDir: reapDir removes a backend directory whatever it holds,
// detaching mounts at or below it first and never deleting through a
// mount (the mount's source keeps its files), whether the directory is
// empty (removed with one rmdir) or not.
func TestReapDir(t *testing.T) {
	canMount := unix.Geteuid() == 0
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) (keep string, ok bool) // keep: a file that must survive
	}{
		{name: "empty"},
		{name: "missing", setup: func(t *testing.T, dir string) (string, bool) { return "", os.Remove(dir) == nil }},
		{name: "files", setup: func(t *testing.T, dir string) (string, bool) {
			scanWrite(t, filepath.Join(dir, "wasm-tasks.json"))
			scanWrite(t, filepath.Join(dir, "a", "b"))
			return "", true
		}},
		{name: "empty dir is a mount point", setup: func(t *testing.T, dir string) (string, bool) {
			return "", canMount && scanBind(t, t.TempDir(), dir)
		}},
		{name: "dir is a mount point of a full directory", setup: func(t *testing.T, dir string) (string, bool) {
			src := t.TempDir()
			keep := filepath.Join(src, "rootfs-file")
			scanWrite(t, keep)
			return keep, canMount && scanBind(t, src, dir)
		}},
		{name: "empty mount on a subdirectory", setup: func(t *testing.T, dir string) (string, bool) {
			return "", canMount && scanBind(t, t.TempDir(), scanMkdir(t, filepath.Join(dir, "vm", "shared")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			scanMkdir(t, dir)
			keep := ""
			if tc.setup != nil {
				var ok bool
				if keep, ok = tc.setup(t, dir); !ok {
					t.Skip("needs root to mount")
				}
			}
			if err := reapDir(context.Background(), dir); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Fatalf("%s still there: %v", dir, err)
			}
			if keep != "" {
				if _, err := os.Stat(keep); err != nil {
					t.Fatalf("a file of the mount's source went with the directory: %v", err)
				}
			}
		})
	}
}
