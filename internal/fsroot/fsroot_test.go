package fsroot

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// layout builds base/root (the Root) and base/host (outside it):
//
//	host/secret            "host secret"
//	root/etc/name          "inside"
//	root/file              "file"
//	root/abs    -> /etc/name           (absolute: resolves inside root)
//	root/hostabs-> base/host/secret     (absolute host path: inside root, missing)
//	root/climb  -> ../../../../host/secret (climbs: clamped at root, missing)
//	root/up     -> ..                  (the root itself)
//	root/rootln -> /
//	root/loop1  -> loop2, root/loop2 -> loop1
//	root/dangling -> /etc/new
func layout(t *testing.T) (r *Root, root, host string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	host = filepath.Join(base, "host")
	for _, d := range []string{root, host, filepath.Join(root, "etc")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(host, "secret"):      "host secret",
		filepath.Join(root, "etc", "name"): "inside",
		filepath.Join(root, "file"):        "file",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":      "/etc/name",
		"hostabs":  filepath.Join(host, "secret"),
		"climb":    "../../../../host/secret",
		"up":       "..",
		"rootln":   "/",
		"loop1":    "loop2",
		"loop2":    "loop1",
		"dangling": "/etc/new",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, root, host
}

// errnoOf returns the unix.Errno inside err (0 for nil).
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.Errno(0xffff)
}

func TestOpen(t *testing.T) {
	r, _, _ := layout(t)
	tests := []struct {
		name  string
		path  string
		flags int
		want  string
		errno unix.Errno
	}{
		{name: "plain", path: "etc/name", want: "inside"},
		{name: "leading slash", path: "/etc/name", want: "inside"},
		{name: "dotdot clamped", path: "../../../../etc/name", want: "inside"},
		{name: "dotdot in the middle", path: "etc/../etc/./name", want: "inside"},
		{name: "absolute link inside", path: "abs", want: "inside"},
		{name: "host absolute link", path: "hostabs", errno: unix.ENOENT},
		{name: "climbing link", path: "climb", errno: unix.ENOENT},
		{name: "link to ..", path: "up/etc/name", want: "inside"},
		{name: "link to /", path: "rootln/rootln/etc/name", want: "inside"},
		{name: "loop", path: "loop1", errno: unix.ELOOP},
		{name: "nofollow on link", path: "abs", flags: unix.O_NOFOLLOW, errno: unix.ELOOP},
		{name: "trailing slash on file", path: "file/", errno: unix.ENOTDIR},
		{name: "empty", path: "", errno: unix.ENOENT},
		{name: "missing", path: "nope", errno: unix.ENOENT},
		{name: "file as directory", path: "file/x", errno: unix.ENOTDIR},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := r.OpenFile(tc.path, unix.O_RDONLY|tc.flags, 0)
			if got := errnoOf(err); got != tc.errno {
				t.Fatalf("OpenFile(%q) error = %v, want errno %v", tc.path, err, tc.errno)
			}
			if err != nil {
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(f)
			if string(b) != tc.want {
				t.Errorf("OpenFile(%q) read %q, want %q", tc.path, b, tc.want)
			}
		})
	}
}

func TestCreateThroughLinks(t *testing.T) {
	r, root, host := layout(t)
	// A dangling absolute link creates its target inside the root.
	f, err := r.OpenFile("dangling", unix.O_WRONLY|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := os.Stat(filepath.Join(root, "etc", "new")); err != nil {
		t.Errorf("create through /etc/new link: %v", err)
	}
	// Links to host paths create nothing on the host.
	for _, name := range []string{"hostabs", "climb"} {
		if f, err := r.OpenFile(name, unix.O_WRONLY|unix.O_CREAT, 0o644); err == nil {
			f.Close()
		}
	}
	entries, _ := os.ReadDir(host)
	if len(entries) != 1 {
		t.Errorf("host dir has %d entries, want only secret", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(host, "secret")); string(b) != "host secret" {
		t.Errorf("host secret changed to %q", b)
	}
}

func TestStatLstatReadlink(t *testing.T) {
	r, root, _ := layout(t)
	var inside unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "etc", "name"), &inside); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		statIno  bool // Stat finds etc/name
		lstatLnk bool // Lstat finds a symlink
		target   string
		errno    unix.Errno // of Stat
		rlErrno  unix.Errno // of Readlink
	}{
		{name: "file", path: "etc/name", statIno: true, rlErrno: unix.EINVAL},
		{name: "absolute link", path: "abs", statIno: true, lstatLnk: true, target: "/etc/name"},
		{name: "host link", path: "hostabs", errno: unix.ENOENT, lstatLnk: true, target: "hostabs"},
		{name: "loop", path: "loop1", errno: unix.ELOOP, lstatLnk: true, target: "loop2"},
		{name: "dir with slash", path: "etc/", rlErrno: unix.EINVAL},
		{name: "link with slash follows", path: "up/", rlErrno: unix.EINVAL},
		{name: "dot", path: ".", rlErrno: unix.EINVAL},
		{name: "dotdot at root", path: "..", rlErrno: unix.EINVAL},
		{name: "empty", path: "", errno: unix.ENOENT, rlErrno: unix.ENOENT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := r.Stat(tc.path)
			if got := errnoOf(err); got != tc.errno {
				t.Fatalf("Stat(%q) = %v, want errno %v", tc.path, err, tc.errno)
			}
			if err == nil && (st.Ino == inside.Ino) != tc.statIno {
				t.Errorf("Stat(%q) ino %d, inside file %d, want same=%v", tc.path, st.Ino, inside.Ino, tc.statIno)
			}
			lst, err := r.Lstat(tc.path)
			if tc.path == "" {
				if errnoOf(err) != unix.ENOENT {
					t.Errorf("Lstat(\"\") = %v, want ENOENT", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lstat(%q): %v", tc.path, err)
			}
			if isLink := lst.Mode&unix.S_IFMT == unix.S_IFLNK; isLink != tc.lstatLnk {
				t.Errorf("Lstat(%q) symlink = %v, want %v", tc.path, isLink, tc.lstatLnk)
			}
			target, err := r.Readlink(tc.path)
			if got := errnoOf(err); got != tc.rlErrno {
				t.Fatalf("Readlink(%q) = %q, %v, want errno %v", tc.path, target, err, tc.rlErrno)
			}
			if err == nil && tc.target != "hostabs" && target != tc.target {
				t.Errorf("Readlink(%q) = %q, want %q", tc.path, target, tc.target)
			}
		})
	}
}

func TestModify(t *testing.T) {
	tests := []struct {
		name  string
		op    func(r *Root) error
		errno unix.Errno
		check func(t *testing.T, root string)
	}{
		{name: "mkdir", op: func(r *Root) error { return r.Mkdir("newdir", 0o755) },
			check: isDir("newdir")},
		{name: "mkdir trailing slash", op: func(r *Root) error { return r.Mkdir("newdir/", 0o755) },
			check: isDir("newdir")},
		{name: "mkdir exists", op: func(r *Root) error { return r.Mkdir("etc", 0o755) }, errno: unix.EEXIST},
		{name: "mkdir dot", op: func(r *Root) error { return r.Mkdir(".", 0o755) }, errno: unix.EEXIST},
		{name: "mkdir dotdot", op: func(r *Root) error { return r.Mkdir("..", 0o755) }, errno: unix.EEXIST},
		{name: "mkdir through dangling link", op: func(r *Root) error { return r.Mkdir("dangling", 0o755) }, errno: unix.EEXIST},
		{name: "mkdir under link to /", op: func(r *Root) error { return r.Mkdir("rootln/made", 0o755) },
			check: isDir("made")},
		{name: "mkdir under climbing dotdot", op: func(r *Root) error { return r.Mkdir("../../made", 0o755) },
			check: isDir("made")},
		{name: "mkdirall", op: func(r *Root) error { return r.MkdirAll("rootln/a/b/c", 0o755) },
			check: isDir("a/b/c")},
		{name: "mkdirall over file", op: func(r *Root) error { return r.MkdirAll("file/a", 0o755) }, errno: unix.ENOTDIR},
		{name: "unlink link not target", op: func(r *Root) error { return r.Unlink("abs") },
			check: func(t *testing.T, root string) { exists(t, root, "etc/name", true); exists(t, root, "abs", false) }},
		{name: "unlink dir", op: func(r *Root) error { return r.Unlink("etc") }, errno: unix.EISDIR},
		{name: "unlink file slash", op: func(r *Root) error { return r.Unlink("file/") }, errno: unix.ENOTDIR},
		{name: "unlink dot", op: func(r *Root) error { return r.Unlink(".") }, errno: unix.EISDIR},
		{name: "unlink empty", op: func(r *Root) error { return r.Unlink("") }, errno: unix.ENOENT},
		{name: "rmdir non-empty", op: func(r *Root) error { return r.Rmdir("etc") }, errno: unix.ENOTEMPTY},
		{name: "rmdir dot", op: func(r *Root) error { return r.Rmdir(".") }, errno: unix.EINVAL},
		{name: "rmdir dotdot", op: func(r *Root) error { return r.Rmdir("..") }, errno: unix.ENOTEMPTY},
		{name: "rmdir link to dir", op: func(r *Root) error { return r.Rmdir("rootln/") }, errno: unix.ENOTDIR},
		{name: "rename", op: func(r *Root) error { return r.Rename("file", "etc/file2") },
			check: func(t *testing.T, root string) { exists(t, root, "etc/file2", true); exists(t, root, "file", false) }},
		{name: "rename link itself", op: func(r *Root) error { return r.Rename("hostabs", "moved") },
			check: func(t *testing.T, root string) { exists(t, root, "moved", true) }},
		{name: "rename dot", op: func(r *Root) error { return r.Rename(".", "x") }, errno: unix.EBUSY},
		{name: "rename onto dotdot", op: func(r *Root) error { return r.Rename("file", "..") }, errno: unix.EBUSY},
		{name: "rename noreplace", op: func(r *Root) error { return r.RenameNoReplace("file", "abs") }, errno: unix.EEXIST},
		{name: "rename file slash", op: func(r *Root) error { return r.Rename("file/", "x") }, errno: unix.ENOTDIR},
		{name: "link", op: func(r *Root) error { return r.Link("file", "hard") },
			check: func(t *testing.T, root string) { exists(t, root, "hard", true) }},
		{name: "link a symlink itself", op: func(r *Root) error { return r.Link("hostabs", "hard") },
			check: func(t *testing.T, root string) { isLink(t, root, "hard") }},
		{name: "link dir", op: func(r *Root) error { return r.Link("etc/", "hard") }, errno: unix.EPERM},
		{name: "link dotdot", op: func(r *Root) error { return r.Link("..", "hard") }, errno: unix.EPERM},
		{name: "link onto dot", op: func(r *Root) error { return r.Link("file", ".") }, errno: unix.EEXIST},
		{name: "symlink", op: func(r *Root) error { return r.Symlink("../../x", "etc/sl") },
			check: func(t *testing.T, root string) { isLink(t, root, "etc/sl") }},
		{name: "symlink exists", op: func(r *Root) error { return r.Symlink("x", "abs") }, errno: unix.EEXIST},
		{name: "symlink dot", op: func(r *Root) error { return r.Symlink("x", "..") }, errno: unix.EEXIST},
		{name: "chmod follows inside", op: func(r *Root) error { return r.Chmod("abs", 0o600) },
			check: mode("etc/name", 0o600)},
		{name: "chmod host link", op: func(r *Root) error { return r.Chmod("hostabs", 0o600) }, errno: unix.ENOENT},
		{name: "chtimes follows inside", op: func(r *Root) error { return r.Chtimes("abs", epoch()) },
			check: mtimeZero("etc/name")},
		{name: "chtimes climbing link", op: func(r *Root) error { return r.Chtimes("climb", epoch()) }, errno: unix.ENOENT},
		{name: "lchtimes link itself", op: func(r *Root) error { return r.Lchtimes("climb", epoch()) },
			check: mtimeZero("climb")},
		{name: "lchtimes dotdot", op: func(r *Root) error { return r.Lchtimes("..", epoch()) },
			check: mtimeZero(".")},
		{name: "lchown link itself", op: func(r *Root) error { return r.Lchown("hostabs", os.Getuid(), os.Getgid()) }},
		{name: "chown host link", op: func(r *Root) error { return r.Chown("hostabs", os.Getuid(), os.Getgid()) }, errno: unix.ENOENT},
		{name: "mknod fifo", op: func(r *Root) error { return r.Mknod("etc/fifo", unix.S_IFIFO|0o600, 0) },
			check: func(t *testing.T, root string) { exists(t, root, "etc/fifo", true) }},
		{name: "openroot sub", op: func(r *Root) error {
			sub, err := r.OpenRoot("rootln/etc")
			if err != nil {
				return err
			}
			defer sub.Close()
			return sub.Mkdir("../../under-etc", 0o755)
		}, check: isDir("etc/under-etc")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, root, host := layout(t)
			var before unix.Stat_t
			unix.Stat(filepath.Join(host, "secret"), &before)
			err := tc.op(r)
			if got := errnoOf(err); got != tc.errno {
				t.Fatalf("error = %v, want errno %v", err, tc.errno)
			}
			if tc.check != nil {
				tc.check(t, root)
			}
			entries, _ := os.ReadDir(host)
			var after unix.Stat_t
			unix.Stat(filepath.Join(host, "secret"), &after)
			if len(entries) != 1 || after.Mtim != before.Mtim || after.Mode != before.Mode || after.Nlink != 1 {
				t.Errorf("outside the root changed: %d entries, secret %+v -> %+v", len(entries), before, after)
			}
		})
	}
}

func epoch() [2]unix.Timespec { return [2]unix.Timespec{{}, {}} }

func exists(t *testing.T, root, name string, want bool) {
	t.Helper()
	_, err := os.Lstat(filepath.Join(root, name))
	if (err == nil) != want {
		t.Errorf("%s exists = %v, want %v", name, err == nil, want)
	}
}

func isLink(t *testing.T, root, name string) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, name))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s is not a symlink (%v)", name, err)
	}
}

func isDir(name string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(root, name))
		if err != nil || !fi.IsDir() {
			t.Errorf("%s is not a directory inside the root (%v)", name, err)
		}
	}
}

func mode(name string, want os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s mode = %v (%v), want %v", name, fi.Mode(), err, want)
		}
	}
}

func mtimeZero(name string) func(*testing.T, string) {
	return func(t *testing.T, root string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(root, name))
		if err != nil || fi.ModTime().Unix() != 0 {
			t.Errorf("%s mtime = %v (%v), want the epoch", name, fi.ModTime(), err)
		}
	}
}

func TestNoCrossMounts(t *testing.T) {
	// /proc is a separate mount below "/": a Root at "/" with
	// NoCrossMounts must refuse to enter it.
	r, err := Open("/", NoCrossMounts())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Stat("proc/self"); errnoOf(err) != unix.EXDEV {
		t.Errorf("Stat(proc/self) with NoCrossMounts = %v, want EXDEV", err)
	}
}

func TestCheck(t *testing.T) {
	// This machine runs a kernel with openat2; Check must agree, and be
	// stable.
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRootErrors(t *testing.T) {
	r, root, _ := layout(t)
	if _, err := Open(filepath.Join(root, "file")); errnoOf(err) != unix.ENOTDIR {
		t.Errorf("Open(file) = %v, want ENOTDIR", err)
	}
	if _, err := r.OpenRoot("climb"); errnoOf(err) != unix.ENOENT {
		t.Errorf("OpenRoot(climb) = %v, want ENOENT", err)
	}
	if r.Name() != root || r.Fd() < 0 {
		t.Errorf("Name, Fd = %q, %d", r.Name(), r.Fd())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestCheckErrors(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{unix.ENOSYS, "Linux 5.6 or later"},
		{unix.E2BIG, "Linux 5.6 or later"},
		{unix.EPERM, "seccomp"},
		{unix.EIO, "probing openat2"},
	}
	for _, tc := range tests {
		err := checkProbe(func() error { return tc.err })
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "kernel") {
			t.Errorf("%v: Check error %v, want one mentioning %q and the kernel", tc.err, err, tc.want)
		}
		if tc.err != unix.EIO && !errdefs.IsFailedPrecondition(err) {
			t.Errorf("%v: %v is not FailedPrecondition", tc.err, err)
		}
	}
}

func TestRemoveAll(t *testing.T) {
	r, root, host := layout(t)
	deep := filepath.Join(root, "tree", "a", "b")
	os.MkdirAll(deep, 0o755)
	os.WriteFile(filepath.Join(deep, "f"), nil, 0o644)
	// Links inside the tree are removed, never followed.
	os.Symlink(host, filepath.Join(root, "tree", "hostlink"))
	os.Symlink("/", filepath.Join(root, "tree", "a", "rootlink"))
	os.Chmod(filepath.Join(root, "tree", "a"), 0o500)
	tests := []struct {
		name  string
		errno unix.Errno
		gone  string
	}{
		{name: "tree", gone: "tree"},
		{name: "file", gone: "file"},
		{name: "hostabs", gone: "hostabs"}, // the link, not the host file
		{name: "rootln/etc/name", gone: "etc/name"},
		{name: "missing"},
		{name: ".", errno: unix.EINVAL},
		{name: "etc/f2/x", errno: unix.ENOTDIR},
	}
	os.WriteFile(filepath.Join(root, "etc", "f2"), nil, 0o644)
	for _, tc := range tests {
		err := r.RemoveAll(tc.name)
		if got := errnoOf(err); got != tc.errno {
			t.Errorf("RemoveAll(%q) = %v, want errno %v", tc.name, err, tc.errno)
		}
		if tc.gone != "" {
			exists(t, root, tc.gone, false)
		}
	}
	if b, err := os.ReadFile(filepath.Join(host, "secret")); err != nil || string(b) != "host secret" {
		t.Errorf("host secret: %q, %v", b, err)
	}
	exists(t, root, "etc", true)
}

// TestAdoptAndAcrossRoots: a directory opened through a Root and adopted is
// a Root of its own (lookups from it stay in it, its options kept), and
// links and renames work between two Roots.
func TestAdoptAndAcrossRoots(t *testing.T) {
	r, root, _ := layout(t)
	fd, err := r.OpenFd("etc", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	etc := r.Adopt(fd, "etc")
	defer etc.Close()
	if etc.Fd() != fd || etc.Name() != filepath.Join(root, "etc") {
		t.Errorf("adopted root: fd %d name %s", etc.Fd(), etc.Name())
	}
	// ".." and an absolute link stop at the adopted directory.
	for _, name := range []string{"name", "../name", "/name", "../../file"} {
		f, err := etc.Open(name)
		if name == "../../file" {
			if err == nil {
				f.Close()
				t.Errorf("%s: opened a file above the adopted root", name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != "inside" {
			t.Errorf("%s: %q", name, b)
		}
	}
	if err := r.LinkTo("file", etc, "hard"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "hard")); string(b) != "file" {
		t.Errorf("link across roots: %q", b)
	}
	if err := etc.RenameTo("hard", r, "moved"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "moved")); string(b) != "file" {
		t.Errorf("rename across roots: %q", b)
	}
	if err := r.LinkTo("etc", etc, "dirlink"); !errors.Is(err, unix.EPERM) {
		t.Errorf("hard link of a directory: %v, want EPERM", err)
	}
}
