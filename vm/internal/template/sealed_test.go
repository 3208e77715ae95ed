package template

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// memWithData is a memory file of size bytes with pattern at offset off
// and holes elsewhere.
func memWithData(t *testing.T, size, off int64, pattern []byte) string {
	t.Helper()
	p := t.TempDir() + "/mem"
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(pattern, off); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSealedCopyRefusesWrites plays a VMM that holds a clone's template
// memory and tries every way to change it: each must be refused, while
// the private copy-on-write mapping a clone uses works and leaves the
// memory as it was.
func TestSealedCopyRefusesWrites(t *testing.T) {
	const size = 4 << 20
	pattern := bytes.Repeat([]byte("template"), 512)
	src := memWithData(t, size, 1<<20, pattern)
	f, err := SealedCopy(src, "test-template")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(pattern))
	if _, err := f.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, pattern) {
		t.Fatalf("copy holds %q (%v), want the source's data", got[:16], err)
	}
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals&Seals != Seals {
		t.Fatalf("seals %#x (%v), want %#x", seals, err, Seals)
	}
	fd := int(f.Fd())
	// What a VMM can reach: the descriptor itself and a reopen of it
	// through /proc/self/fd (what QEMU does with mem-path), read-write.
	re, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("reopen read-write (QEMU 7.2 needs it): %v", err)
	}
	defer re.Close()
	for _, tc := range []struct {
		name string
		try  func() error
	}{
		{"write", func() error { _, err := unix.Pwrite(fd, []byte("evil"), 1<<20); return err }},
		{"write through reopen", func() error { _, err := re.WriteAt([]byte("evil"), 1<<20); return err }},
		{"shared writable mmap", func() error {
			m, err := unix.Mmap(int(re.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err == nil {
				copy(m[1<<20:], "evil")
				unix.Munmap(m)
			}
			return err
		}},
		{"shared mmap made writable", func() error {
			m, err := unix.Mmap(int(re.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return nil // refused outright is fine too
			}
			defer unix.Munmap(m)
			return unix.Mprotect(m, unix.PROT_READ|unix.PROT_WRITE)
		}},
		{"truncate", func() error { return re.Truncate(0) }},
		{"grow", func() error { return re.Truncate(2 * size) }},
		{"punch a hole", func() error {
			return unix.Fallocate(int(re.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1<<20, 4096)
		}},
		{"remove the seals", func() error { _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL); return err }},
	} {
		if err := tc.try(); err == nil {
			t.Errorf("%s: allowed, want it refused", tc.name)
		} else if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
			t.Errorf("%s: %v, want EPERM", tc.name, err)
		}
	}
	// A clone's mapping: private and writable.
	m, err := unix.Mmap(int(re.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatalf("private writable mapping (what a clone uses) refused: %v", err)
	}
	copy(m[1<<20:], "mine")
	if string(m[1<<20:1<<20+4]) != "mine" {
		t.Fatal("private mapping not writable")
	}
	unix.Munmap(m)
	if _, err := f.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, pattern) {
		t.Fatalf("the template's memory changed: %q (%v)", got[:16], err)
	}
	if fi, _ := f.Stat(); fi.Size() != size {
		t.Fatalf("size %d, want %d", fi.Size(), size)
	}
}

// TestGetHandsOutSealedMemory: Get and Lookup hand out read-only
// descriptors of one sealed copy per build; a rebuilt template gets a new
// copy and Close leaves the store's.
func TestGetHandsOutSealedMemory(t *testing.T) {
	s := NewStore(t.TempDir(), t.TempDir())
	key := testKey(t)
	var calls atomic.Int32
	build := func(ctx context.Context, key Key, mem, state string) error {
		if err := fakeBuild(&calls)(ctx, key, mem, state); err != nil {
			return err
		}
		f, err := os.OpenFile(mem, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt([]byte("build "+strconv.Itoa(int(calls.Load()))), 4096)
		return err
	}
	read := func(tpl *Template) string {
		t.Helper()
		b := make([]byte, 7)
		if _, err := tpl.Memory().ReadAt(b, 4096); err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	a, err := s.Get(context.Background(), key, build)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Lookup(key)
	if err != nil {
		t.Fatal(err)
	}
	if read(a) != "build 1" || read(b) != "build 1" {
		t.Fatalf("memory %q / %q, want the build's", read(a), read(b))
	}
	var sa, sb unix.Stat_t
	unix.Fstat(int(a.Memory().Fd()), &sa)
	unix.Fstat(int(b.Memory().Fd()), &sb)
	if sa.Ino != sb.Ino {
		t.Fatal("two Gets of one build got two copies of the memory")
	}
	if fl, _ := unix.FcntlInt(a.Memory().Fd(), unix.F_GETFL, 0); fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Fatalf("handed-out descriptor opened with flags %#x, want read-only", fl)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if read(b) != "build 1" {
		t.Fatal("closing one template's memory closed another's")
	}
	if err := s.Invalidate(context.Background(), b, errors.New("test")); err != nil {
		t.Fatal(err)
	}
	c, err := s.Get(context.Background(), key, build)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if read(c) != "build 2" || read(b) != "build 1" {
		t.Fatalf("after a rebuild: new %q, old %q; want build 2 and build 1 (a running clone keeps its copy)", read(c), read(b))
	}
	b.Close()
}

// TestSealedCopyOfRebuiltTemplate: a template looked up before another
// process rebuilt it gets no sealed copy (its memory is not the one that
// goes with its state): Aborted, and nothing cached.
func TestSealedCopyOfRebuiltTemplate(t *testing.T) {
	s := NewStore(t.TempDir(), t.TempDir())
	key := testKey(t)
	var calls atomic.Int32
	if _, err := s.get(context.Background(), key, fakeBuild(&calls)); err != nil {
		t.Fatal(err)
	}
	stale, err := s.lookup(key)
	if err != nil {
		t.Fatal(err)
	}
	// The rebuild renames a new memory file into place.
	next := stale.MemPath + ".new"
	if err := os.WriteFile(next, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, stale.MemPath); err != nil {
		t.Fatal(err)
	}
	if err := s.attachSealed(context.Background(), stale); !errdefs.IsAborted(err) {
		t.Fatalf("sealing a template rebuilt meanwhile: %v, want Aborted", err)
	}
	if stale.Memory() != nil || len(s.sealed.m) != 0 {
		t.Fatal("a sealed copy of the wrong memory was handed out or cached")
	}
}

// TestMemoryEarly plays a clone's VMM started while the store copies the
// template's memory (MemoryEarly): it reopens the descriptor read-write
// and maps it privately at once, as QEMU does, before the copy is known
// to be complete. Waiting for sealed must then succeed (a private
// mapping does not stop the seal), after which the VMM's descriptor can
// no longer write, and its mapping shows the template's data. A failed
// copy is reported by sealed, hands out no memory through Memory, and is
// not cached: the next Get copies again.
func TestMemoryEarly(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail bool
	}{
		{"copy succeeds", false},
		{"copy fails", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewStore(t.TempDir(), t.TempDir())
			key := testKey(t)
			var calls atomic.Int32
			// A build whose memory holds data at 8192.
			build := func(ctx context.Context, key Key, mem, state string) error {
				if err := fakeBuild(&calls)(ctx, key, mem, state); err != nil {
					return err
				}
				f, err := os.OpenFile(mem, os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				_, err = f.WriteAt([]byte("template"), 8192)
				return err
			}
			if tc.fail {
				fillFault = func() error { return unix.ENOSPC }
				t.Cleanup(func() { fillFault = nil })
			}
			tpl, err := s.Get(context.Background(), key, build)
			if err != nil {
				t.Fatal(err)
			}
			defer tpl.Close()
			f, sealed := tpl.MemoryEarly()
			if f == nil || sealed == nil {
				t.Fatal("MemoryEarly handed out nothing")
			}
			vmm, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDWR, 0)
			if err != nil {
				t.Fatalf("reopen read-write before the seal: %v", err)
			}
			defer vmm.Close()
			st, _ := vmm.Stat()
			m, err := unix.Mmap(int(vmm.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
			if err != nil {
				t.Fatalf("private mapping before the seal: %v", err)
			}
			defer unix.Munmap(m)
			err = sealed(context.Background())
			if tc.fail {
				if err == nil {
					t.Fatal("sealed: nil after a failed copy")
				}
				if tpl.Memory() != nil {
					t.Fatal("Memory handed out the memory of a failed copy")
				}
				fillFault = nil
				again, err := s.Get(context.Background(), key, build)
				if err != nil {
					t.Fatal(err)
				}
				defer again.Close()
				if again.Memory() == nil {
					t.Fatal("the next Get did not copy again after a failed copy")
				}
				return
			}
			if err != nil {
				t.Fatalf("sealed: %v", err)
			}
			if got := string(m[8192 : 8192+8]); got != "template" {
				t.Fatalf("the VMM's private mapping reads %q, want the template's data", got)
			}
			if _, err := vmm.WriteAt([]byte("evil"), 8192); !errors.Is(err, unix.EPERM) {
				t.Fatalf("write through the VMM's early read-write descriptor after sealing: %v, want EPERM", err)
			}
			copy(m[8192:], "mine") // copy-on-write into the VMM's own pages
			b := make([]byte, 8)
			if _, err := tpl.Memory().ReadAt(b, 8192); err != nil || string(b) != "template" {
				t.Fatalf("template memory reads %q (%v) after the VMM wrote its mapping", b, err)
			}
		})
	}
}
