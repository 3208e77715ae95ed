package runspec

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// FileID identifies one version of a file: the file (device and inode), its
// size and its last modification and status change times in nanoseconds.
// Any write to the file, a truncate, a chmod, a rename of it and replacing
// it with another file all move its change time (ctime) forward, and no
// process can set a ctime: while a file's FileID stays the same, so does
// its content (see ChangedBefore for the one exception and how it is
// avoided).
type FileID struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64
}

// ChangedBefore reports whether the file's last change (ctime and mtime) lies
// before t. The kernel stamps ctime with a coarse clock, so a file changed
// twice within one tick keeps one ctime: had the first version been read
// between the two changes, its FileID would name both. A FileID whose
// times lie further in the past, when it was read, than a tick (and than
// any clock step) cannot be shared with a later version, whose ctime is then
// necessarily later: only such a FileID may key a cache of the content (the
// reasoning of git's "racily clean" index entries).
func (id FileID) ChangedBefore(t time.Time) bool {
	limit := t.UnixNano()
	return id.Ctime < limit && id.Mtime < limit
}

// ModuleFile is a module file opened inside a rootfs (ReadModule's
// resolution), not read yet: its FileID lets a caller skip reading and
// compiling a module it already has.
type ModuleFile struct {
	fd   int
	name string
	id   FileID
	// pathOnly: fd is an O_PATH descriptor (OpenInRoot's lookup), reopened
	// for reading only when the file is read.
	pathOnly bool
}

// OpenInRoot opens the module file name (a path as the container sees it,
// absolute) inside the host directory root: the file ResolveInRoot names,
// opened as OpenModule opens it, and as safely, but in the common case with
// a single lookup in the kernel. A path that resolves beneath root without
// an absolute symlink or a ".." above root (openat2 RESOLVE_BENEATH, which
// refuses both: there ResolveInRoot's walk, which follows an absolute symlink
// from root and refuses "..", could only agree) to a regular file is opened
// O_PATH, so that nothing but a regular file is ever opened for reading (a
// FIFO would block, a device could act on the open), and reopened for
// reading only if ReadAll is called (a module cached by FileID is not).
// Every other path, and every failure, takes ResolveInRoot and OpenModule,
// with their refusals and messages. The caller must Close the file.
func OpenInRoot(root, name string) (*ModuleFile, error) {
	if f := openBeneath(root, name); f != nil {
		return f, nil
	}
	p, err := ResolveInRoot(root, name)
	if err != nil {
		return nil, err
	}
	return OpenModule(root, p)
}

// openBeneath is OpenInRoot's single lookup; nil when it does not find a
// regular file (or fails in any way).
func openBeneath(root, name string) *ModuleFile {
	rel := strings.TrimLeft(name, "/")
	if rel == "" || !filepath.IsAbs(root) {
		return nil
	}
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	unix.Close(rfd)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil
	}
	return &ModuleFile{fd: fd, name: "/" + rel, pathOnly: true, id: FileID{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}}
}

// OpenModule opens modulePath (a host path inside root) the way ReadModule
// does (resolved by the kernel inside root, never following a symlink out
// of it; a regular file), and returns it with its FileID. The caller must
// Close it.
func OpenModule(root, modulePath string) (*ModuleFile, error) {
	rel, err := filepath.Rel(root, modulePath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("module %s is not inside the rootfs %s: %w (%w)", modulePath, root, ErrEscape, errdefs.ErrInvalidArgument)
	}
	r, err := fsroot.Open(root)
	if err != nil {
		return nil, fmt.Errorf("module %s: rootfs: %w: %w", rel, err, errdefs.ErrNotFound)
	}
	fd, err := r.OpenFd(rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("module /%s: %w: %w", rel, err, errdefs.ErrNotFound)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("module /%s is not a regular file: point the entrypoint at the .wasm file: %w", rel, errdefs.ErrInvalidArgument)
	}
	return &ModuleFile{fd: fd, name: "/" + rel, id: FileID{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
	}}, nil
}

// ID is the file's identity when it was opened.
func (f *ModuleFile) ID() FileID { return f.id }

// maxModuleSize bounds what ReadAll reads in one buffer sized from the
// file's size: larger files are read as a stream.
const maxModuleSize = 1 << 30

// ReadAll reads the whole file: with one buffer of the size fstat gave, so
// that a module costs one read, not a growing buffer's many.
func (f *ModuleFile) ReadAll() ([]byte, error) {
	if f.pathOnly {
		// The O_PATH descriptor's file itself, never a name resolved
		// again: /proc/self/fd/N is a link to the open file.
		fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(f.fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("reopen module %s for reading: %w", f.name, err)
		}
		unix.Close(f.fd)
		f.fd, f.pathOnly = fd, false
	}
	if f.id.Size <= 0 || f.id.Size > maxModuleSize {
		return io.ReadAll(fdReader(f.fd))
	}
	b := make([]byte, f.id.Size+1) // +1: see that the file did not grow
	n := 0
	for n < len(b) {
		m, err := unix.Pread(f.fd, b[n:], int64(n))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read module %s: %w", f.name, err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	if n != int(f.id.Size) {
		return nil, fmt.Errorf("module %s changed size while being read (%d bytes, then %d): %w", f.name, f.id.Size, n, errdefs.ErrAborted)
	}
	return b[:n], nil
}

// Close releases the file.
func (f *ModuleFile) Close() error { return unix.Close(f.fd) }

// fdReader reads a descriptor with read(2).
type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}
