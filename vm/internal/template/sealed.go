package template

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// A restored VM must never be able to change its template: a guest that
// takes over its VMM would otherwise rewrite the memory every later clone
// starts from (a cross-tenant attack). QEMU 7.2 opens a memory backend
// file read-write even for a private mapping, so a read-only bind of the
// memory file is not enough, and a writable one hands the template to
// the VMM. Clones therefore never see the memory file: the store copies
// it once per process into a sealed memfd (F_SEAL_WRITE, F_SEAL_GROW,
// F_SEAL_SHRINK, then F_SEAL_SEAL, so no seal can be removed) that every
// clone inherits and maps privately. The kernel refuses every write to a
// write-sealed memfd, whoever holds it and however it was opened:
// write(2), a shared writable mmap(2), ftruncate(2), fallocate(2) hole
// punching, and the same through a reopened /proc/self/fd/N. A private
// writable mapping stays allowed (copy-on-write into the clone's own
// pages), and the clones of one process share the memfd's pages until
// they write them, as they shared the file's.

// Seals are the seals a template's memory carries (F_GET_SEALS).
const Seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// sealedCache holds one sealed memfd per template build for this process.
type sealedCache struct {
	mu sync.Mutex
	m  map[string]*sealedMem // digest → memfd
}

type sealedMem struct {
	build string
	f     *os.File
	// done is closed when the copy into f is complete and f sealed, or
	// failed (err). Until then f is written by the copy only.
	done chan struct{}
	err  error
}

// wait waits until the copy ended and returns its error.
func (c *sealedMem) wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Memory is the template's guest memory as a sealed memfd, opened
// read-only for this Template (see Close): hand it to the VMM, which
// maps it privately. It waits until the copy is complete and sealed
// (see MemoryEarly); nil when that failed, and for a Template the store
// did not hand out.
func (t *Template) Memory() *os.File {
	if t.mem == nil || t.sealed == nil || t.sealed.wait(context.Background()) != nil {
		return nil
	}
	return t.mem
}

// MemoryEarly is Memory without waiting: the descriptor at once, while
// the store may still be copying the template's data into it (the first
// restore in a process), and sealed, which waits until the copy is
// complete and the memfd sealed (nil), or failed. A VMM may be started
// with the descriptor and map it privately meanwhile, which overlaps
// the copy with its start-up; but it must not load the device state nor
// run the guest before sealed returned nil: until then the memory may be
// incomplete, and a VMM holding the descriptor read-write could change
// it. The kernel checks the seals against every descriptor, so once
// sealed, nothing opened earlier can write either.
func (t *Template) MemoryEarly() (f *os.File, sealed func(context.Context) error) {
	if t.mem == nil || t.sealed == nil {
		return nil, nil
	}
	c, mem := t.sealed, t.mem
	return mem, func(ctx context.Context) error {
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("template %s: sealing its memory: %w", t.Key.Digest(), err)
		}
		// Checked on this Template's own descriptor: the same memfd.
		if got, err := unix.FcntlInt(mem.Fd(), unix.F_GET_SEALS, 0); err != nil || got&Seals != Seals {
			return fmt.Errorf("template %s: memory seals %#x (%v), want %#x: %w", t.Key.Digest(), got, err, Seals, errdefs.ErrInternal)
		}
		return nil
	}
}

// Close releases the template's memory descriptor (not the memory,
// which the store and running clones keep). Without it the descriptor is
// closed when t is garbage collected.
func (t *Template) Close() error {
	if t.mem == nil {
		return nil
	}
	return t.mem.Close()
}

// attachSealed gives t its own read-only descriptor of the sealed copy of
// its memory, starting the copy on first use of this build: the copy
// runs in the background (Memory and MemoryEarly wait for it), so a VMM
// can start meanwhile. A failed copy is forgotten, so the next attach
// tries again.
func (s *Store) attachSealed(ctx context.Context, t *Template) error {
	d := t.Key.Digest()
	s.sealed.mu.Lock()
	defer s.sealed.mu.Unlock()
	c := s.sealed.m[d]
	if c != nil && c.build == t.build {
		select {
		case <-c.done:
			if c.err != nil { // failed: copy again
				delete(s.sealed.m, d)
				c.f.Close()
				c = nil
			}
		default:
		}
	}
	if c == nil || c.build != t.build {
		src, err := os.OpenFile(t.MemPath, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("template %s: %w", d, err)
		}
		// Rebuilt by another process since t was looked up: its memory
		// does not go with t's state.
		if st, err := src.Stat(); err != nil || st.Sys().(*syscall.Stat_t).Ino != t.memInode {
			src.Close()
			return fmt.Errorf("template %s was rebuilt while being read (%v): %w", d, err, errdefs.ErrAborted)
		}
		f, err := newMemfd(src, "kuasar-vm-template-"+d)
		if err != nil {
			src.Close()
			return fmt.Errorf("template %s: %w", d, err)
		}
		if c != nil {
			old := c
			// Its copy writes through old.f's descriptor number: close
			// it only once the copy is over.
			go func() {
				<-old.done
				old.f.Close()
			}()
		}
		if s.sealed.m == nil {
			s.sealed.m = map[string]*sealedMem{}
		}
		c = &sealedMem{build: t.build, f: f, done: make(chan struct{})}
		s.sealed.m[d] = c
		go c.fill(context.WithoutCancel(ctx), src, d)
	}
	// A read-only open file description of its own: the caller may close
	// it, and the store may drop its copy, independently.
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(c.f.Fd())), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("template %s: reopening its sealed memory: %w", d, err)
	}
	t.mem, t.sealed = f, c
	return nil
}

// fillFault, set by tests only, fails the background copy (a copy that
// fails as a full tmpfs would).
var fillFault func() error

// fill copies src's data into c.f, seals it and closes src, then marks c
// done.
func (c *sealedMem) fill(ctx context.Context, src *os.File, d string) {
	defer close(c.done)
	defer src.Close()
	t0 := time.Now()
	err := fillSealed(c.f, src)
	if fillFault != nil {
		err = errors.Join(err, fillFault())
	}
	if err != nil {
		c.err = err
		log.G(ctx).WithField("template", d).WithError(err).Warn("vm: copying the template's memory into a sealed memfd")
		return
	}
	var st unix.Stat_t
	_ = unix.Fstat(int(c.f.Fd()), &st)
	log.G(ctx).WithField("template", d).WithField("data_bytes", st.Blocks*512).WithField("took", time.Since(t0)).Info("vm: template memory copied into a sealed memfd for this process")
}

// dropSealed forgets digest d's sealed copy (the template was removed);
// clones that inherited it keep it.
func (s *Store) dropSealed(d string) {
	s.sealed.mu.Lock()
	defer s.sealed.mu.Unlock()
	if c := s.sealed.m[d]; c != nil {
		delete(s.sealed.m, d)
		// A copy still running writes through c.f's descriptor number:
		// close it only once the copy is over.
		go func() {
			<-c.done
			c.f.Close()
		}()
	}
}

// SealedCopy copies the file at path into a new memfd named name (its
// holes stay holes: only the data the guest touched is copied) and seals
// it with Seals. The memfd is close-on-exec; pass it to a child
// explicitly.
func SealedCopy(path, name string) (*os.File, error) {
	src, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := newMemfd(src, name)
	if err != nil {
		return nil, err
	}
	if err := fillSealed(dst, src); err != nil {
		dst.Close()
		return nil, err
	}
	return dst, nil
}

// newMemfd makes an empty memfd named name, of src's size, that can be
// sealed. src must be a regular file.
func newMemfd(src *os.File, name string) (_ *os.File, retErr error) {
	fi, err := src.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", src.Name(), errdefs.ErrInvalidArgument)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	dst := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := dst.Truncate(fi.Size()); err != nil {
		dst.Close()
		return nil, err
	}
	return dst, nil
}

// fillSealed copies src's data into the memfd dst (made by newMemfd for
// src) and seals it with Seals.
func fillSealed(dst, src *os.File) error {
	fi, err := dst.Stat()
	if err != nil {
		return err
	}
	if err := copyData(dst, src, fi.Size()); err != nil {
		return fmt.Errorf("copying %s into a memfd: %w", src.Name(), err)
	}
	if _, err := unix.FcntlInt(dst.Fd(), unix.F_ADD_SEALS, Seals); err != nil {
		return fmt.Errorf("sealing the memfd: %w", err)
	}
	if got, err := unix.FcntlInt(dst.Fd(), unix.F_GET_SEALS, 0); err != nil || got&Seals != Seals {
		return fmt.Errorf("memfd seals %#x after sealing (%v), want %#x: %w", got, err, Seals, errdefs.ErrInternal)
	}
	return nil
}

// copyData copies the data regions of src (SEEK_DATA/SEEK_HOLE) into dst
// at the same offsets; the holes between them stay holes in dst.
//
// Each region goes through sendfile(2), which moves the source's pages
// into the destination inside the kernel: about a third of the time of
// read(2)/write(2) through a buffer (io.Copy between two files: there is
// no copy_file_range(2) between a tmpfs file and a memfd, which live on
// different mounts). Where sendfile refuses the pair (EINVAL, ENOSYS:
// an older kernel, a file system without splice), the rest goes through
// a buffer.
func copyData(dst, src *os.File, size int64) error {
	useSendfile := true
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // only a hole is left
			return nil
		}
		if err != nil {
			return err
		}
		end, err := unix.Seek(int(src.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if useSendfile {
			done, err := sendfileRegion(dst, src, start, end)
			switch {
			case err == nil:
				off = end
				continue
			case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
				useSendfile = false
				start += done
			default:
				return fmt.Errorf("copied %d of %d bytes at %d: %w", done, end-start, start, err)
			}
		}
		if _, err := src.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if _, err := dst.Seek(start, io.SeekStart); err != nil {
			return err
		}
		if n, err := io.CopyN(dst, src, end-start); err != nil {
			return fmt.Errorf("copied %d of %d bytes at %d: %w", n, end-start, start, err)
		}
		off = end
	}
	return nil
}

// sendfileRegion copies src's bytes [start, end) to the same offsets of
// dst with sendfile(2) and returns how many it copied.
func sendfileRegion(dst, src *os.File, start, end int64) (int64, error) {
	// sendfile writes at dst's file offset and reads at *in (leaving
	// src's offset alone).
	if _, err := dst.Seek(start, io.SeekStart); err != nil {
		return 0, err
	}
	in := start
	for in < end {
		// At most 1 GiB per call, well below the kernel's limit
		// (MAX_RW_COUNT).
		n, err := unix.Sendfile(int(dst.Fd()), int(src.Fd()), &in, int(min(end-in, 1<<30)))
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return in - start, err
		}
		if n == 0 { // the source shrank under us
			return in - start, fmt.Errorf("%s ended at %d, before its data region's end %d: %w", src.Name(), in, end, io.ErrUnexpectedEOF)
		}
	}
	return in - start, nil
}
