package wazero

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"golang.org/x/sys/unix"
)

func newTestFS(t *testing.T) (*confinedFS, string) {
	t.Helper()
	dir := t.TempDir()
	c, err := newConfinedFS(dir, &hostErrno{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c, dir
}

// TestRootFileReaddir lists a directory larger than one getdents buffer in
// pages, as wazero's dirent cache does, then rewinds and lists it again
// after a new entry: every name once, with its inode and type, and a short
// page only at the end.
func TestRootFileReaddir(t *testing.T) {
	c, dir := newTestFS(t)
	want := map[string]os.FileMode{}
	for i := range 600 {
		name := fmt.Sprintf("file-with-a-longish-name-%04d", i)
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = 0
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	want["sub"] = os.ModeDir
	os.Symlink("x", filepath.Join(dir, "ln"))
	want["ln"] = os.ModeSymlink

	f, errno := c.OpenFile(".", experimentalsys.O_RDONLY|experimentalsys.O_DIRECTORY, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer f.Close()
	list := func() map[string]os.FileMode {
		got := map[string]os.FileMode{}
		for {
			page, errno := f.Readdir(7)
			if errno != 0 {
				t.Fatal(errno)
			}
			for _, d := range page {
				if _, dup := got[d.Name]; dup {
					t.Fatalf("%s listed twice", d.Name)
				}
				var st unix.Stat_t
				unix.Lstat(filepath.Join(dir, d.Name), &st)
				if d.Ino != st.Ino {
					t.Errorf("%s: ino %d, want %d", d.Name, d.Ino, st.Ino)
				}
				got[d.Name] = d.Type
			}
			if len(page) < 7 {
				return got
			}
		}
	}
	if got := list(); len(got) != len(want) {
		t.Fatalf("listed %d entries, want %d", len(got), len(want))
	} else {
		for n, typ := range want {
			if got[n] != typ {
				t.Errorf("%s: type %v, want %v", n, got[n], typ)
			}
		}
	}
	os.WriteFile(filepath.Join(dir, "late"), nil, 0o644)
	if _, errno := f.Seek(0, io.SeekStart); errno != 0 {
		t.Fatal(errno)
	}
	if got := list(); len(got) != len(want)+1 {
		t.Errorf("after rewind: %d entries, want %d", len(got), len(want)+1)
	}
	if _, errno := f.Seek(5, io.SeekStart); errno != experimentalsys.EISDIR {
		t.Errorf("seek a directory to 5 = %v, want EISDIR", errno)
	}
}

// TestRootFileIO exercises the file methods on the fd: positional and
// appending writes, truncation, times, stat, and a non-blocking FIFO.
func TestRootFileIO(t *testing.T) {
	c, dir := newTestFS(t)
	f, errno := c.OpenFile("f", experimentalsys.O_RDWR|experimentalsys.O_CREAT, 0o640)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer f.Close()
	if n, errno := f.Write([]byte("hello")); n != 5 || errno != 0 {
		t.Fatalf("Write = %d, %v", n, errno)
	}
	if n, errno := f.Pwrite([]byte("J"), 0); n != 1 || errno != 0 {
		t.Fatalf("Pwrite = %d, %v", n, errno)
	}
	buf := make([]byte, 8)
	if n, _ := f.Pread(buf, 0); string(buf[:n]) != "Jello" {
		t.Errorf("Pread = %q", buf[:n])
	}
	if errno := f.SetAppend(true); errno != 0 || !f.IsAppend() {
		t.Fatalf("SetAppend = %v", errno)
	}
	f.Seek(0, io.SeekStart)
	f.Write([]byte("!"))
	if errno := f.Truncate(-1); errno != experimentalsys.EINVAL {
		t.Errorf("Truncate(-1) = %v", errno)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "Jello!" {
		t.Errorf("file = %q, want Jello!", b)
	}
	if errno := f.Truncate(2); errno != 0 {
		t.Fatal(errno)
	}
	if errno := f.Utimens(0, experimentalsys.UTIME_OMIT); errno != 0 {
		t.Fatal(errno)
	}
	st, errno := f.Stat()
	if errno != 0 || st.Size != 2 || st.Atim != 0 || st.Mode.Perm() != 0o640 || st.Mode.IsDir() {
		t.Errorf("Stat = %+v, %v", st, errno)
	}
	if isDir, _ := f.IsDir(); isDir {
		t.Error("IsDir of a file")
	}
	if errno := f.Sync(); errno != 0 {
		t.Error(errno)
	}
	if errno := f.Datasync(); errno != 0 {
		t.Error(errno)
	}
	if errno := f.Close(); errno != 0 {
		t.Fatal(errno)
	}
	if _, errno := f.Read(buf); errno != experimentalsys.EBADF {
		t.Errorf("Read after Close = %v", errno)
	}

	// A FIFO opened non-blocking stays non-blocking.
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(filepath.Join(dir, "fifo"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p, errno := c.OpenFile("fifo", experimentalsys.O_RDONLY|experimentalsys.O_NONBLOCK, 0)
	if errno != 0 {
		t.Fatal(errno)
	}
	defer p.Close()
	if _, errno := p.Read(buf); errno != experimentalsys.EAGAIN {
		t.Errorf("Read of an empty non-blocking FIFO = %v, want EAGAIN", errno)
	}
}

// TestConfinedFSSymlinkAbsolute keeps wazero's rule: guest-made links with
// absolute targets are refused.
func TestConfinedFSSymlinkAbsolute(t *testing.T) {
	c, dir := newTestFS(t)
	if errno := c.Symlink("/etc/passwd", "l"); errno != experimentalsys.EPERM {
		t.Errorf("Symlink(/etc/passwd) = %v, want EPERM", errno)
	}
	if errno := c.Symlink("../x", "l"); errno != 0 {
		t.Fatal(errno)
	}
	entries, _ := os.ReadDir(dir)
	if !slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() == "l" }) {
		t.Error("relative link not created")
	}
}
