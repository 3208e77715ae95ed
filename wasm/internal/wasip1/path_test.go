package wasip1

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPathOpen: path_open's oflags, lookup flags and path rules. Paths are
// relative to their fd: absolute ones and ".." above it are ENOTCAPABLE
// (the public test suite's interesting_paths accepts EPERM too).
func TestPathOpen(t *testing.T) {
	tree := func(e *env) {
		os.MkdirAll(filepath.Join(e.dir, "dir", "nested"), 0o755)
		e.write("dir/nested/file", "nested")
		e.write("f", "data")
		os.Symlink("f", filepath.Join(e.dir, "link"))
		os.Symlink("dir", filepath.Join(e.dir, "dirlink"))
		os.Symlink("missing", filepath.Join(e.dir, "dangling"))
	}
	open := func(path string, lookup, oflags uint32, base uint64) func(e *env) Errno {
		return func(e *env) Errno { _, errno := e.open(3, lookup, path, oflags, base, 0, 0); return errno }
	}
	const follow = lookupflagSymlinkFollow
	runCases(t, []errnoCase{
		{name: "plain file", setup: tree, do: open("f", 0, 0, RightFdRead)},
		{name: "absolute path", setup: tree, do: open("/f", 0, 0, RightFdRead), want: ErrnoNotcapable},
		{name: "dotdot above the fd", setup: tree, do: open("dir/../../f", 0, 0, RightFdRead), want: ErrnoNotcapable},
		{name: "dotdot inside the fd", setup: tree, do: open("dir/.//nested/../../dir/nested/../nested///./file", 0, 0, RightFdRead)},
		{name: "trailing NUL", setup: tree, do: open("f\x00", 0, 0, RightFdRead), want: ErrnoInval},
		{name: "invalid UTF-8", setup: tree, do: open("f\xff", 0, 0, RightFdRead), want: ErrnoIlseq},
		{name: "trailing slash on a file", setup: tree, do: open("dir/nested/file/", 0, 0, RightFdRead), want: ErrnoNotdir},
		{name: "trailing slash on a dir", setup: tree, do: open("dir/nested/", 0, 0, RightFdReaddir)},
		{name: "empty path", setup: tree, do: open("", 0, 0, RightFdRead), want: ErrnoNoent},
		{name: "missing", setup: tree, do: open("nope", 0, 0, RightFdRead), want: ErrnoNoent},
		{name: "directory flag on a file", setup: tree, do: open("f", 0, oflagDirectory, 0), want: ErrnoNotdir},
		{name: "create exclusive existing", setup: tree, do: open("f", 0, oflagCreat|oflagExcl, RightFdWrite), want: ErrnoExist},
		{name: "create and directory", setup: tree, do: open("new", 0, oflagCreat|oflagDirectory, 0), want: ErrnoInval},
		{name: "unknown oflag", setup: tree, do: open("f", 0, 1<<4, 0), want: ErrnoInval},
		{name: "create", setup: tree, do: open("new", 0, oflagCreat, RightFdWrite), check: func(t *testing.T, e *env) {
			if e.read("new") != "" {
				t.Errorf("new: %q", e.read("new"))
			}
		}},
		{name: "truncate", setup: tree, do: open("f", 0, oflagTrunc, RightFdWrite), check: func(t *testing.T, e *env) {
			if e.read("f") != "" {
				t.Errorf("f: %q", e.read("f"))
			}
		}},
		{name: "write to a directory", setup: tree, do: open("dir", 0, 0, RightFdWrite), want: ErrnoIsdir},
		{name: "directory flag with write rights", setup: tree, do: open(".", 0, oflagDirectory, RightFdRead|RightFdWrite), want: ErrnoIsdir},
		{name: "directory with no rights", setup: tree, do: open(".", 0, oflagDirectory, 0)},
		{name: "preopen again with its own rights", setup: tree, do: func(e *env) Errno {
			_, errno := e.open(3, 0, ".", oflagDirectory, rightsDir, rightsDirInheriting, 0)
			return errno
		}},
		{name: "symlink followed", setup: tree, do: open("link", follow, 0, RightFdRead)},
		{name: "symlink not followed", setup: tree, do: open("link", 0, 0, RightFdRead), want: ErrnoLoop},
		{name: "dir symlink not followed as a directory", setup: tree, do: open("dirlink", 0, oflagDirectory, 0), want: ErrnoNotdir},
		{name: "dangling symlink followed", setup: tree, do: open("dangling", follow, 0, RightFdRead), want: ErrnoNoent},
		{name: "through a dir symlink", setup: tree, do: open("dirlink/nested/file", 0, 0, RightFdRead)},
		{name: "from a file fd", setup: tree, do: func(e *env) Errno {
			fd := e.mustOpen("f", 0, RightFdRead, 0)
			_, errno := e.open(fd, 0, "x", 0, 0, 0, 0)
			return errno
		}, want: ErrnoNotdir},
		{name: "from a closed fd", setup: tree, do: func(e *env) Errno { _, errno := e.open(30, 0, "f", 0, 0, 0, 0); return errno }, want: ErrnoBadf},
		{name: "result out of memory", setup: tree, do: func(e *env) Errno {
			p, n := e.str(strPtr, "f")
			return e.call("path_open", 3, 0, p, n, 0, RightFdRead, 0, 0, 65535)
		}, want: ErrnoFault},
		{name: "opened directory resolves its own paths", setup: tree, do: func(e *env) Errno {
			fd, errno := e.open(3, 0, "dir", oflagDirectory, rightsDir, rightsDirInheriting, 0)
			if errno != 0 {
				return errno
			}
			if _, errno := e.open(fd, 0, "nested/file", 0, RightFdRead, 0, 0); errno != 0 {
				return errno
			}
			_, errno = e.open(fd, 0, "../f", 0, RightFdRead, 0, 0)
			return errno
		}, want: ErrnoNotcapable},
		// A FIFO opens at once (the host never waits in the kernel for its
		// other end, where no kill would reach it): for reading it is
		// empty, for writing with no reader ENXIO, as open(2) with
		// O_NONBLOCK says.
		{name: "fifo for reading", do: func(e *env) Errno {
			if err := unix.Mkfifo(filepath.Join(e.dir, "fifo"), 0o644); err != nil {
				e.t.Fatal(err)
			}
			fd, errno := e.open(3, 0, "fifo", 0, RightFdRead|RightFdFilestatGet, 0, 0)
			if errno != 0 {
				return errno
			}
			e.call("fd_filestat_get", uint64(fd), resPtr)
			if e.bytes(resPtr+16, 1)[0] != FiletypeUnknown {
				e.t.Errorf("fifo filetype %d", e.bytes(resPtr+16, 1)[0])
			}
			return 0
		}},
		{name: "fifo for writing without a reader", do: func(e *env) Errno {
			if err := unix.Mkfifo(filepath.Join(e.dir, "fifo"), 0o644); err != nil {
				e.t.Fatal(err)
			}
			_, errno := e.open(3, 0, "fifo", 0, RightFdWrite, 0, 0)
			return errno
		}, want: ErrnoNxio},
		{name: "read-only mount refuses create", do: func(e *env) Errno { _, errno := e.open(4, 0, "x", oflagCreat, RightFdWrite, 0, 0); return errno }, want: ErrnoRofs},
		{name: "read-only mount refuses write", do: func(e *env) Errno {
			os.WriteFile(filepath.Join(e.rodir, "r"), []byte("r"), 0o644)
			_, errno := e.open(4, 0, "r", 0, RightFdWrite, 0, 0)
			return errno
		}, want: ErrnoRofs},
		{name: "read-only mount reads", do: func(e *env) Errno {
			os.WriteFile(filepath.Join(e.rodir, "r"), []byte("r"), 0o644)
			_, errno := e.open(4, 0, "r", 0, RightFdRead, 0, 0)
			return errno
		}},
	})
}

// TestPathOps: the other path_* functions, each with its errnos.
func TestPathOps(t *testing.T) {
	tree := func(e *env) {
		os.MkdirAll(filepath.Join(e.dir, "dir", "sub"), 0o755)
		os.Mkdir(filepath.Join(e.dir, "empty"), 0o755)
		e.write("f", "data")
		os.Symlink("f", filepath.Join(e.dir, "link"))
		os.Symlink("a-rather-long-target", filepath.Join(e.dir, "long"))
	}
	pstat := func(e *env, path string, lookup uint32) Errno {
		p, n := e.str(strPtr, path)
		return e.call("path_filestat_get", 3, uint64(lookup), p, n, resPtr)
	}
	two := func(name string, from, to string) func(e *env) Errno {
		return func(e *env) Errno {
			p, n := e.str(strPtr, from)
			q, m := e.str(str2Ptr, to)
			if name == "path_link" {
				return e.call(name, 3, 0, p, n, 3, q, m)
			}
			return e.call(name, 3, p, n, 3, q, m)
		}
	}
	symlink := func(target, name string, fd uint64) func(e *env) Errno {
		return func(e *env) Errno {
			p, n := e.str(str2Ptr, target)
			q, m := e.str(strPtr, name)
			return e.call("path_symlink", p, n, fd, q, m)
		}
	}
	exists := func(name string, want bool) func(t *testing.T, e *env) {
		return func(t *testing.T, e *env) {
			_, err := os.Lstat(filepath.Join(e.dir, name))
			if (err == nil) != want {
				t.Errorf("%s exists: %v, want %v", name, err == nil, want)
			}
		}
	}
	runCases(t, []errnoCase{
		{name: "create_directory", setup: tree, do: func(e *env) Errno { return e.pathCall("path_create_directory", 3, "new") }, check: exists("new", true)},
		{name: "create_directory existing", setup: tree, do: func(e *env) Errno { return e.pathCall("path_create_directory", 3, "dir") }, want: ErrnoExist},
		{name: "create_directory under a file", setup: tree, do: func(e *env) Errno { return e.pathCall("path_create_directory", 3, "f/x") }, want: ErrnoNotdir},
		{name: "create_directory read-only", do: func(e *env) Errno { return e.pathCall("path_create_directory", 4, "x") }, want: ErrnoRofs},
		{name: "remove_directory", setup: tree, do: func(e *env) Errno { return e.pathCall("path_remove_directory", 3, "empty") }, check: exists("empty", false)},
		{name: "remove_directory not empty", setup: tree, do: func(e *env) Errno { return e.pathCall("path_remove_directory", 3, "dir") }, want: ErrnoNotempty},
		{name: "remove_directory of a file", setup: tree, do: func(e *env) Errno { return e.pathCall("path_remove_directory", 3, "f") }, want: ErrnoNotdir},
		{name: "unlink_file", setup: tree, do: func(e *env) Errno { return e.pathCall("path_unlink_file", 3, "f") }, check: exists("f", false)},
		{name: "unlink_file symlink itself", setup: tree, do: func(e *env) Errno { return e.pathCall("path_unlink_file", 3, "link") }, check: exists("f", true)},
		{name: "unlink_file of a directory", setup: tree, do: func(e *env) Errno { return e.pathCall("path_unlink_file", 3, "empty") }, want: ErrnoIsdir},
		{name: "unlink_file trailing slash", setup: tree, do: func(e *env) Errno { return e.pathCall("path_unlink_file", 3, "f/") }, want: ErrnoNotdir},
		{name: "unlink_file missing", setup: tree, do: func(e *env) Errno { return e.pathCall("path_unlink_file", 3, "nope") }, want: ErrnoNoent},
		{name: "unlink_file without the right", setup: tree, do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightPathUnlinkFile, rightsDirInheriting)
			return e.pathCall("path_unlink_file", 3, "f")
		}, want: ErrnoNotcapable},
		{name: "filestat_get follows", setup: tree, do: func(e *env) Errno { return pstat(e, "link", lookupflagSymlinkFollow) }, check: func(t *testing.T, e *env) {
			if e.bytes(resPtr+16, 1)[0] != FiletypeRegularFile || e.u64(resPtr+32) != 4 {
				t.Errorf("type %d size %d", e.bytes(resPtr+16, 1)[0], e.u64(resPtr+32))
			}
		}},
		// Symlink metadata: without symlink_follow the link itself.
		{name: "filestat_get of the symlink itself", setup: tree, do: func(e *env) Errno { return pstat(e, "link", 0) }, check: func(t *testing.T, e *env) {
			if e.bytes(resPtr+16, 1)[0] != FiletypeSymbolicLink || e.u64(resPtr+32) != 1 {
				t.Errorf("type %d size %d", e.bytes(resPtr+16, 1)[0], e.u64(resPtr+32))
			}
		}},
		{name: "filestat_get missing", setup: tree, do: func(e *env) Errno { return pstat(e, "nope", 0) }, want: ErrnoNoent},
		{name: "filestat_set_times through a path", setup: tree, do: func(e *env) Errno {
			p, n := e.str(strPtr, "link")
			return e.call("path_filestat_set_times", 3, lookupflagSymlinkFollow, p, n, 1e9, 2e9, fstAtim|fstMtim)
		}, check: func(t *testing.T, e *env) {
			if st, _ := os.Stat(filepath.Join(e.dir, "f")); st.ModTime().Unix() != 2 {
				t.Errorf("mtime %v", st.ModTime())
			}
		}},
		{name: "filestat_set_times on the symlink itself", setup: tree, do: func(e *env) Errno {
			p, n := e.str(strPtr, "link")
			return e.call("path_filestat_set_times", 3, 0, p, n, 0, 3e9, fstMtim)
		}, check: func(t *testing.T, e *env) {
			st, _ := os.Lstat(filepath.Join(e.dir, "link"))
			ft, _ := os.Stat(filepath.Join(e.dir, "f"))
			if st.ModTime().Unix() != 3 || ft.ModTime().Unix() == 3 {
				t.Errorf("link mtime %v, target %v", st.ModTime(), ft.ModTime())
			}
		}},
		{name: "filestat_set_times now", setup: tree, do: func(e *env) Errno {
			os.Chtimes(filepath.Join(e.dir, "f"), time.Unix(1, 0), time.Unix(1, 0))
			p, n := e.str(strPtr, "f")
			return e.call("path_filestat_set_times", 3, 0, p, n, 0, 0, fstMtimNow)
		}, check: func(t *testing.T, e *env) {
			if st, _ := os.Stat(filepath.Join(e.dir, "f")); time.Since(st.ModTime()) > time.Hour {
				t.Errorf("mtime %v", st.ModTime())
			}
		}},
		{name: "filestat_set_times mtim and mtim_now", setup: tree, do: func(e *env) Errno {
			p, n := e.str(strPtr, "f")
			return e.call("path_filestat_set_times", 3, 0, p, n, 0, 0, fstMtim|fstMtimNow)
		}, want: ErrnoInval},
		{name: "filestat_set_times read-only", do: func(e *env) Errno {
			os.WriteFile(filepath.Join(e.rodir, "r"), nil, 0o644)
			p, n := e.str(strPtr, "r")
			return e.call("path_filestat_set_times", 4, 0, p, n, 0, 0, fstMtimNow)
		}, want: ErrnoRofs},
		{name: "link", setup: tree, do: two("path_link", "f", "hard"), check: func(t *testing.T, e *env) {
			if e.read("hard") != "data" {
				t.Errorf("hard: %q", e.read("hard"))
			}
			if e.call("fd_filestat_get", uint64(e.mustOpen("f", 0, RightFdFilestatGet, 0)), resPtr) != 0 || e.u64(resPtr+24) != 2 {
				t.Errorf("nlink %d", e.u64(resPtr+24))
			}
		}},
		{name: "link existing target", setup: tree, do: two("path_link", "f", "link"), want: ErrnoExist},
		{name: "link a directory", setup: tree, do: two("path_link", "dir", "dir2"), want: ErrnoPerm},
		{name: "link missing source", setup: tree, do: two("path_link", "nope", "x"), want: ErrnoNoent},
		// The witx allows old_flags to follow; the public test suite
		// expects EINVAL, as wasmtime answers.
		{name: "link with symlink_follow", setup: tree, do: func(e *env) Errno {
			p, n := e.str(strPtr, "link")
			q, m := e.str(str2Ptr, "x")
			return e.call("path_link", 3, lookupflagSymlinkFollow, p, n, 3, q, m)
		}, want: ErrnoInval},
		{name: "link to itself", setup: tree, do: two("path_link", "f", "f"), want: ErrnoExist},
		{name: "link with a trailing slash on the new name", setup: tree, do: two("path_link", "f", "new/"), want: ErrnoNoent},
		{name: "link a dangling symlink", setup: tree, do: func(e *env) Errno {
			os.Symlink("missing", filepath.Join(e.dir, "dangling"))
			return two("path_link", "dangling", "l2")(e)
		}},
		{name: "link the symlink itself", setup: tree, do: two("path_link", "link", "link2"), check: func(t *testing.T, e *env) {
			if st, err := os.Lstat(filepath.Join(e.dir, "link2")); err != nil || st.Mode()&os.ModeSymlink == 0 {
				t.Errorf("link2 is not a symlink: %v", err)
			}
		}},
		{name: "link across fds", setup: tree, do: func(e *env) Errno {
			fd, _ := e.open(3, 0, "dir", oflagDirectory, rightsDir, rightsDirInheriting, 0)
			p, n := e.str(strPtr, "f")
			q, m := e.str(str2Ptr, "linked")
			return e.call("path_link", 3, 0, p, n, uint64(fd), q, m)
		}, check: func(t *testing.T, e *env) {
			if e.read("dir/linked") != "data" {
				t.Errorf("dir/linked: %q", e.read("dir/linked"))
			}
		}},
		{name: "rename", setup: tree, do: two("path_rename", "f", "g"), check: func(t *testing.T, e *env) {
			if e.read("g") != "data" {
				t.Errorf("g: %q", e.read("g"))
			}
		}},
		{name: "rename dir over a file", setup: tree, do: two("path_rename", "empty", "f"), want: ErrnoNotdir},
		{name: "rename file over a dir", setup: tree, do: two("path_rename", "f", "empty"), want: ErrnoIsdir},
		{name: "rename dir over a non-empty dir", setup: tree, do: two("path_rename", "empty", "dir"), want: ErrnoNotempty},
		{name: "rename missing", setup: tree, do: two("path_rename", "nope", "x"), want: ErrnoNoent},
		{name: "rename escaping", setup: tree, do: two("path_rename", "f", "../x"), want: ErrnoNotcapable},
		{name: "symlink", setup: tree, do: symlink("dir/sub", "s", 3), check: func(t *testing.T, e *env) {
			if target, _ := os.Readlink(filepath.Join(e.dir, "s")); target != "dir/sub" {
				t.Errorf("target %q", target)
			}
		}},
		{name: "symlink absolute target", setup: tree, do: symlink("/etc/passwd", "s", 3), want: ErrnoPerm},
		{name: "symlink existing", setup: tree, do: symlink("x", "f", 3), want: ErrnoExist},
		{name: "symlink trailing slash", setup: tree, do: symlink("x", "s/", 3), want: ErrnoNoent},
		{name: "symlink read-only", do: symlink("x", "s", 4), want: ErrnoRofs},
		{name: "readlink", setup: tree, do: func(e *env) Errno { return e.pathCall("path_readlink", 3, "long", bufPtr, 64, resPtr) }, check: func(t *testing.T, e *env) {
			if string(e.bytes(bufPtr, e.u32(resPtr))) != "a-rather-long-target" {
				t.Errorf("target %q", e.bytes(bufPtr, e.u32(resPtr)))
			}
		}},
		// wazero's own host fails with ERANGE here; readlink(2) and the
		// public test suite cut the target to the buffer.
		{name: "readlink into a small buffer", setup: tree, do: func(e *env) Errno { return e.pathCall("path_readlink", 3, "long", bufPtr, 4, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != 4 || string(e.bytes(bufPtr, 4)) != "a-ra" {
				t.Errorf("bufused %d %q", e.u32(resPtr), e.bytes(bufPtr, 4))
			}
		}},
		{name: "readlink of a file", setup: tree, do: func(e *env) Errno { return e.pathCall("path_readlink", 3, "f", bufPtr, 64, resPtr) }, want: ErrnoInval},
		{name: "readlink without the right", setup: tree, do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightPathReadlink, rightsDirInheriting)
			return e.pathCall("path_readlink", 3, "long", bufPtr, 64, resPtr)
		}, want: ErrnoNotcapable},
	})
}

// TestReaddir: entries with their types and cookies; a buffer too small
// for the last entry is filled to its end.
func TestReaddir(t *testing.T) {
	e := newEnv(t)
	e.write("file", "x")
	os.Mkdir(filepath.Join(e.dir, "sub"), 0o755)
	os.Symlink("file", filepath.Join(e.dir, "sym"))
	list := func(cookie uint64, size uint32) map[string]uint8 {
		t.Helper()
		if errno := e.call("fd_readdir", 3, bufPtr, uint64(size), cookie, resPtr); errno != 0 {
			t.Fatalf("fd_readdir: %d", errno)
		}
		used := e.u32(resPtr)
		b := e.bytes(bufPtr, used)
		got := map[string]uint8{}
		for len(b) >= sizeDirent {
			n := binary.LittleEndian.Uint32(b[16:])
			if uint32(len(b)) < sizeDirent+n {
				break
			}
			got[string(b[sizeDirent:sizeDirent+n])] = b[20]
			b = b[sizeDirent+n:]
		}
		return got
	}
	got := list(0, 4096)
	want := map[string]uint8{".": FiletypeDirectory, "..": FiletypeDirectory, "file": FiletypeRegularFile, "sub": FiletypeDirectory, "sym": FiletypeSymbolicLink}
	if len(got) != len(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: type %d, want %d", k, got[k], v)
		}
	}
	// A buffer of 30 bytes holds one header and a cut second one.
	if errno := e.call("fd_readdir", 3, bufPtr, 30, 0, resPtr); errno != 0 || e.u32(resPtr) != 30 {
		t.Errorf("small buffer: errno %d bufused %d, want 30", errno, e.u32(resPtr))
	}
	// Walking by cookies sees every entry once.
	seen := map[string]bool{}
	for cookie := uint64(0); ; {
		if errno := e.call("fd_readdir", 3, bufPtr, 40, cookie, resPtr); errno != 0 {
			t.Fatal(errno)
		}
		used := e.u32(resPtr)
		if used < sizeDirent {
			break
		}
		b := e.bytes(bufPtr, used)
		n := binary.LittleEndian.Uint32(b[16:])
		seen[string(b[sizeDirent:sizeDirent+n])] = true
		cookie = binary.LittleEndian.Uint64(b)
	}
	if len(seen) != len(want) {
		t.Errorf("walk saw %v", seen)
	}
	if errno := e.call("fd_readdir", 3, bufPtr, 4096, 99, resPtr); errno != 0 || e.u32(resPtr) != 0 {
		t.Errorf("past the end: errno %d bufused %d", errno, e.u32(resPtr))
	}
}

// TestPwriteAppend: fd_pwrite writes at its offset on a file opened for
// append, and fd_write still appends (Linux pwrite(2) would append).
func TestPwriteAppend(t *testing.T) {
	e := newEnv(t)
	e.write("f", "0123456789")
	fd := e.mustOpen("f", 0, rRW, fdflagAppend)
	a, n := e.iov("AB", 0)
	if errno := e.call("fd_pwrite", uint64(fd), a, n, 2, resPtr); errno != 0 || e.u32(resPtr) != 2 {
		t.Fatalf("fd_pwrite: errno %d nwritten %d", errno, e.u32(resPtr))
	}
	a, n = e.iov("Z", 0)
	if errno := e.call("fd_write", uint64(fd), a, n, resPtr); errno != 0 {
		t.Fatal(errno)
	}
	if got := e.read("f"); got != "01AB456789Z" {
		t.Errorf("content %q, want 01AB456789Z", got)
	}
	if e.call("fd_fdstat_get", uint64(fd), resPtr) != 0 || e.bytes(resPtr+2, 1)[0] != fdflagAppend {
		t.Errorf("fdflags %d, want append", e.bytes(resPtr+2, 1)[0])
	}
}

// subscription writes subscription i at bufPtr.
func (e *env) subscription(i int, userdata uint64, typ uint8, fdOrClock uint32, timeout uint64, flags uint16) {
	b := make([]byte, sizeSubscription)
	binary.LittleEndian.PutUint64(b, userdata)
	b[8] = typ
	binary.LittleEndian.PutUint32(b[16:], fdOrClock)
	binary.LittleEndian.PutUint64(b[24:], timeout)
	binary.LittleEndian.PutUint16(b[40:], flags)
	e.mod.Memory().Write(bufPtr+uint32(i*sizeSubscription), b)
}

type pollEvent struct {
	userdata uint64
	errno    Errno
	typ      uint8
	nbytes   uint64
	flags    uint16
}

func (e *env) poll(n int) ([]pollEvent, Errno) {
	const out = bufPtr + 4096
	errno := e.call("poll_oneoff", bufPtr, out, uint64(n), resPtr)
	if errno != 0 {
		return nil, errno
	}
	var evs []pollEvent
	for i := uint32(0); i < e.u32(resPtr); i++ {
		b := e.bytes(out+i*sizeEvent, sizeEvent)
		evs = append(evs, pollEvent{le64(b), Errno(binary.LittleEndian.Uint16(b[8:])), b[10], le64(b[16:]), binary.LittleEndian.Uint16(b[24:])})
	}
	return evs, 0
}

// TestPollOneoff: clocks, files, stdout and stdin (a pipe: nothing to read
// until written), with per-subscription errors.
func TestPollOneoff(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	e := newEnv(t, func(c *Config) { c.Stdin = pr })
	e.write("f", "0123456789")
	fd := e.mustOpen("f", 0, rRead, 0)

	if _, errno := e.poll(0); errno != ErrnoInval {
		t.Errorf("no subscriptions: errno %d, want EINVAL", errno)
	}
	start := time.Now()
	e.subscription(0, 7, eventClock, clockMonotonic, uint64(20*time.Millisecond), 0)
	evs, errno := e.poll(1)
	if errno != 0 || len(evs) != 1 || evs[0].userdata != 7 || evs[0].typ != eventClock || evs[0].errno != 0 || time.Since(start) < 20*time.Millisecond {
		t.Errorf("relative clock: %v %d after %v", evs, errno, time.Since(start))
	}
	now := uint64(time.Now().UnixNano())
	e.subscription(0, 8, eventClock, clockRealtime, now-1, subclockAbstime)
	if evs, errno := e.poll(1); errno != 0 || len(evs) != 1 || evs[0].userdata != 8 {
		t.Errorf("absolute clock in the past: %v %d", evs, errno)
	}
	e.subscription(0, 9, eventClock, 42, 1, 0)
	if evs, _ := e.poll(1); len(evs) != 1 || evs[0].errno != ErrnoInval {
		t.Errorf("unknown clock: %v", evs)
	}
	// A file is ready at once, with the bytes left; stdin (an empty pipe)
	// is not, so only the file and stdout fire.
	e.subscription(0, 1, eventFdRead, fd, 0, 0)
	e.subscription(1, 2, eventFdRead, 0, 0, 0)
	e.subscription(2, 3, eventFdWrite, 1, 0, 0)
	e.subscription(3, 4, eventFdRead, 77, 0, 0)
	evs, errno = e.poll(4)
	if errno != 0 || len(evs) != 3 {
		t.Fatalf("files: %v %d", evs, errno)
	}
	if evs[0].userdata != 1 || evs[0].nbytes != 10 || evs[1].userdata != 3 || evs[2].userdata != 4 || evs[2].errno != ErrnoBadf {
		t.Errorf("files: %+v", evs)
	}
	// stdin alone with a timeout: nothing comes, the clock fires.
	e.subscription(0, 5, eventFdRead, 0, 0, 0)
	e.subscription(1, 6, eventClock, clockMonotonic, uint64(10*time.Millisecond), 0)
	if evs, errno := e.poll(2); errno != 0 || len(evs) != 1 || evs[0].userdata != 6 {
		t.Errorf("stdin timeout: %+v %d", evs, errno)
	}
	// Input arrives while the guest waits.
	go pw.WriteString("hello")
	e.subscription(1, 6, eventClock, clockMonotonic, uint64(time.Minute), 0)
	evs, errno = e.poll(2)
	if errno != 0 || len(evs) != 1 || evs[0].userdata != 5 || evs[0].nbytes != 5 {
		t.Fatalf("stdin ready: %+v %d", evs, errno)
	}
	a, n := e.iov("", 16)
	if e.call("fd_read", 0, a, n, resPtr) != 0 || string(e.bytes(bufPtr, e.u32(resPtr))) != "hello" {
		t.Errorf("read after poll: %q", e.bytes(bufPtr, e.u32(resPtr)))
	}
	// At the end of the input stdin is ready with a hangup.
	pw.Close()
	e.subscription(0, 5, eventFdRead, 0, 0, 0)
	if evs, errno := e.poll(1); errno != 0 || len(evs) != 1 || evs[0].flags != eventrwHangup {
		t.Errorf("stdin at EOF: %+v %d", evs, errno)
	}
	// stdout lacks fd_read: reading it is EBADF in the event.
	e.subscription(0, 1, eventFdRead, 1, 0, 0)
	if evs, _ := e.poll(1); len(evs) != 1 || evs[0].errno != ErrnoBadf {
		t.Errorf("read poll on stdout: %+v", evs)
	}
}

// openPTY opens a pseudo-terminal pair, or skips the test where there is
// none (no devpts in the container).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open the pty's slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestPollStdinTerminal: stdin on a terminal is polled and read as a pipe
// is: not ready until a line is typed, then ready with it.
func TestPollStdinTerminal(t *testing.T) {
	master, slave := openPTY(t)
	e := newEnv(t, func(c *Config) { c.Stdin = slave; c.Terminal[0] = true })
	e.subscription(0, 1, eventFdRead, 0, 0, 0)
	e.subscription(1, 2, eventClock, clockMonotonic, uint64(10*time.Millisecond), 0)
	if evs, errno := e.poll(2); errno != 0 || len(evs) != 1 || evs[0].userdata != 2 {
		t.Fatalf("terminal with nothing typed: %+v %d, want the clock", evs, errno)
	}
	master.WriteString("typed\n")
	e.subscription(1, 2, eventClock, clockMonotonic, uint64(time.Minute), 0)
	if evs, errno := e.poll(2); errno != 0 || len(evs) != 1 || evs[0].userdata != 1 {
		t.Fatalf("terminal with a line typed: %+v %d, want stdin", evs, errno)
	}
	a, n := e.iov("", 64)
	if e.call("fd_read", 0, a, n, resPtr) != 0 || string(e.bytes(bufPtr, e.u32(resPtr))) != "typed\n" {
		t.Errorf("read %q", e.bytes(bufPtr, e.u32(resPtr)))
	}
	if e.call("fd_fdstat_get", 0, resPtr) != 0 || e.u64(resPtr+8)&(RightFdSeek|RightFdTell) != 0 {
		t.Errorf("terminal stdin rights %#x: seek or tell would make isatty() false", e.u64(resPtr+8))
	}
}

// TestFIFOReadInterruptible: a guest blocked reading a FIFO from its mount
// gets the data written to it, and when its run is stopped the read ends
// with EINTR instead of holding the guest in the kernel, unkillable.
func TestFIFOReadInterruptible(t *testing.T) {
	e := newEnv(t)
	name := filepath.Join(e.dir, "fifo")
	if err := unix.Mkfifo(name, 0o644); err != nil {
		t.Fatal(err)
	}
	// The host end, opened read-write so that neither open waits.
	host, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	fd := e.mustOpen("fifo", 0, RightFdRead, 0)
	a, n := e.iov("", 16)
	read := func(ctx context.Context) chan Errno {
		done := make(chan Errno, 1)
		go func() {
			res, err := e.mod.ExportedFunction("fd_read").Call(ctx, uint64(fd), a, n, resPtr)
			if err != nil {
				t.Error(err)
			}
			done <- Errno(res[0])
		}()
		return done
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := read(ctx)
	host.WriteString("data")
	select {
	case errno := <-done:
		if errno != 0 || string(e.bytes(bufPtr, e.u32(resPtr))) != "data" {
			t.Fatalf("read: errno %d, %q", errno, e.bytes(bufPtr, e.u32(resPtr)))
		}
	case <-time.After(time.Minute):
		t.Fatal("the read did not return the data written")
	}
	done = read(ctx)
	cancel()
	select {
	case errno := <-done:
		if errno != ErrnoIntr {
			t.Fatalf("read of a stopped run: errno %d, want EINTR", errno)
		}
	case <-time.After(time.Minute):
		t.Fatal("the read was not interrupted by the stop")
	}
}

// TestUnstableLayouts: a module importing wasi_unstable (snapshot 0) gets
// that snapshot's layouts: a 56-byte filestat with a u32 nlink, whence
// ordered cur, end, set, 56-byte subscriptions whose clock fields follow
// an extra identifier. Writing preview 1's 64-byte filestat would
// overwrite 8 bytes of the guest's memory past its struct.
func TestUnstableLayouts(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Args = []string{"unstable"} })
	e.write("f", "0123456789")
	fd := e.mustOpen("f", 0, rRead, 0)
	mem := e.mod.Memory()
	mem.WriteUint64Le(resPtr+56, 0xfeedfacecafebeef) // just past a snapshot-0 filestat
	if errno := e.call("fd_filestat_get", uint64(fd), resPtr); errno != 0 {
		t.Fatal(errno)
	}
	if e.bytes(resPtr+16, 1)[0] != FiletypeRegularFile || e.u32(resPtr+20) != 1 || e.u64(resPtr+24) != 10 || e.u64(resPtr+56) != 0xfeedfacecafebeef {
		t.Errorf("fd_filestat_get: type %d nlink %d size %d, after it %#x", e.bytes(resPtr+16, 1)[0], e.u32(resPtr+20), e.u64(resPtr+24), e.u64(resPtr+56))
	}
	p, n := e.str(strPtr, "f")
	if errno := e.call("path_filestat_get", 3, 0, p, n, resPtr); errno != 0 || e.u64(resPtr+24) != 10 || e.u64(resPtr+56) != 0xfeedfacecafebeef {
		t.Errorf("path_filestat_get: errno %d size %d, after it %#x", errno, e.u64(resPtr+24), e.u64(resPtr+56))
	}
	for _, tc := range []struct {
		off    int64
		whence uint64
		want   uint64
	}{{3, 2, 3}, {2, 0, 5}, {-1, 1, 9}} { // set, cur, end in snapshot 0's order
		if errno := e.call("fd_seek", uint64(fd), uint64(tc.off), tc.whence, resPtr); errno != 0 || e.u64(resPtr) != tc.want {
			t.Errorf("fd_seek(%d, whence %d): errno %d offset %d, want %d", tc.off, tc.whence, errno, e.u64(resPtr), tc.want)
		}
	}
	b := make([]byte, sizeSubscriptionUnstable)
	binary.LittleEndian.PutUint64(b, 42)
	b[8] = eventClock
	binary.LittleEndian.PutUint32(b[24:], clockMonotonic)
	binary.LittleEndian.PutUint64(b[32:], uint64(time.Millisecond))
	mem.Write(bufPtr, b)
	if errno := e.call("poll_oneoff", bufPtr, bufPtr+4096, 1, resPtr); errno != 0 || e.u32(resPtr) != 1 || e.u64(bufPtr+4096) != 42 || e.u32(bufPtr+4096+8)&0xffff != 0 {
		t.Errorf("poll_oneoff: errno %d, %d events, userdata %d, error %d", errno, e.u32(resPtr), e.u64(bufPtr+4096), e.u32(bufPtr+4096+8)&0xffff)
	}
}

// TestPollOneoffReleasesWhileWaiting: a poll_oneoff that waits (a sleep)
// calls Config.Blocking before the wait and its resume after, so the task
// service lets go of a sleeping guest's OS thread; one that finds an event
// ready at once, or waits less than minReleasedWait, calls neither.
func TestPollOneoffReleasesWhileWaiting(t *testing.T) {
	var log []string
	e := newEnv(t, func(c *Config) {
		c.Blocking = func() func() {
			log = append(log, "block")
			return func() { log = append(log, "resume") }
		}
	})
	tests := []struct {
		name    string
		timeout uint64
		flags   uint16
		want    []string
	}{
		{"sleep", uint64(5 * time.Millisecond), 0, []string{"block", "resume"}},
		{"deadline passed", 1, subclockAbstime, nil},
		// A guest spinning on tiny sleeps keeps its thread, so that its
		// CPU time stays counted.
		{"shorter than minReleasedWait", uint64(minReleasedWait / 10), 0, nil},
	}
	for _, tt := range tests {
		log = nil
		e.subscription(0, 1, eventClock, clockMonotonic, tt.timeout, tt.flags)
		if evs, errno := e.poll(1); errno != 0 || len(evs) != 1 {
			t.Fatalf("%s: %v %d", tt.name, evs, errno)
		}
		if !slices.Equal(log, tt.want) {
			t.Errorf("%s: Blocking calls %v, want %v", tt.name, log, tt.want)
		}
	}
}
