// Package fsroot confines file-system operations to a directory tree that a
// hostile party can write to, without a check-then-use race.
//
// # Why
//
// A guest (a Wasm module with a writable mount, an image's layers, a VM's
// shared directory) controls the names and symlinks inside its tree, and
// two guests, or a guest and any host process, may change the tree while the
// host works in it. Resolving a path first (with filepath-securejoin, say)
// and then handing the resolved name to open(2) is a race: between the two,
// a directory on the checked path can be renamed away and a symlink to "/"
// renamed into its place, and the kernel then follows it out of the tree.
// Two cooperating Wasm guests won that race against kuasar's earlier
// confined file system within a few hundred tries and read the host's
// files.
//
// # How
//
// A Root holds an O_PATH file descriptor of the tree's top directory. Every
// operation resolves its path exactly once, in the kernel, with openat2(2)
// and RESOLVE_IN_ROOT: absolute symlinks and ".." are interpreted as if the
// Root were "/", so they cannot leave it, and the kernel itself refuses (with
// EAGAIN, retried a bounded number of times) a ".." walk that raced a rename.
// RESOLVE_NO_MAGICLINKS keeps /proc-style links from jumping anywhere.
//
//   - Operations that follow the last component (open, stat, chmod, utimes)
//     get an fd of the target from openat2 and act on that fd.
//   - Operations on the last component itself (lstat, readlink) get an
//     O_PATH|O_NOFOLLOW fd of it from openat2 and act on that fd.
//   - Operations that create, remove or rename a name (mkdir, unlink, rmdir,
//     rename, link, symlink, lutimes, lchown, mknod) resolve the parent
//     directory to an fd with openat2 and then call the *at system call with
//     that fd and the last component, a single name that the kernel never
//     follows.
//
// No name is ever resolved again after that: whatever the tree looks like a
// moment later, the fd stays the object that was found inside it.
//
// Kernels without openat2 (before Linux 5.6) are refused by Check rather
// than served by a weaker fallback: the fallbacks (securejoin followed by a
// reopen, or a userspace walk with O_NOFOLLOW that cannot honour absolute
// symlinks safely) are exactly what this package exists to replace.
//
// # Paths
//
// Names are slash-separated paths inside the Root; a leading "/" means the
// Root itself, so "/a/b" and "a/b" are the same name. A trailing slash
// requires a directory and, as in POSIX, follows a final symlink (inside the
// Root). The empty name is ENOENT. Errors are *fs.PathError values whose Err
// is the kernel's unix.Errno, so errors.Is(err, fs.ErrNotExist) and
// errors.Is(err, unix.EMFILE) work.
package fsroot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// resolveFlags are the openat2 resolve flags every lookup uses: guest
// semantics for absolute symlinks and "..", and no /proc magic links.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// maxRetries bounds the openat2 calls retried after EAGAIN (the kernel saw a
// concurrent rename or mount during a ".." walk). A guest that renames in a
// tight loop can make one lookup fail with EAGAIN, never escape.
const maxRetries = 128

// Root is a directory tree that operations cannot leave. It is safe for
// concurrent use; Close it when done.
type Root struct {
	fd      int
	name    string
	resolve uint64
}

// Option changes how Open resolves paths inside a Root.
type Option func(*Root)

// NoCrossMounts makes every lookup fail with EXDEV when it would cross a
// mount point inside the Root (RESOLVE_NO_XDEV). Use it for trees that should
// hold no mounts at all, such as an image being unpacked; guest mounts leave
// it off, since a host directory may well contain mounts the host put there.
func NoCrossMounts() Option {
	return func(r *Root) { r.resolve |= unix.RESOLVE_NO_XDEV }
}

// Open opens the directory dir (a host path, resolved normally: it is
// trusted) as a Root.
func Open(dir string, opts ...Option) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open root", Path: dir, Err: err}
	}
	r := &Root{fd: fd, name: dir, resolve: resolveFlags}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Name returns the host path the Root was opened with, for messages only:
// never resolve it again.
func (r *Root) Name() string { return r.name }

// Fd returns the Root's O_PATH directory descriptor. It stays owned by the
// Root.
func (r *Root) Fd() int { return r.fd }

// Close releases the Root's descriptor. Files opened through it stay open.
func (r *Root) Close() error {
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}

// OpenRoot opens the directory name inside r as a Root of its own, with the
// same options. The new Root is confined to that directory.
func (r *Root) OpenRoot(name string) (*Root, error) {
	fd, err := r.openat2("openroot", name, unix.O_PATH|unix.O_DIRECTORY, 0, 0)
	if err != nil {
		return nil, err
	}
	return &Root{fd: fd, name: path.Join(r.name, clean(name)), resolve: r.resolve}, nil
}

// openat2 resolves name inside r once and opens it with flags (O_CLOEXEC
// added) and mode; extra resolve flags are added to r's.
func (r *Root) openat2(op, name string, flags int, mode uint32, extra uint64) (int, error) {
	if name == "" {
		return -1, &fs.PathError{Op: op, Path: name, Err: unix.ENOENT}
	}
	p := relative(name)
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(mode),
		Resolve: r.resolve | extra,
	}
	// openat2 refuses a mode without O_CREAT or O_TMPFILE (whose bits
	// include O_DIRECTORY's, hence the full comparison).
	if flags&unix.O_CREAT == 0 && flags&unix.O_TMPFILE != unix.O_TMPFILE {
		how.Mode = 0
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(r.fd, p, &how)
		if err == nil {
			return fd, nil
		}
		if (err == unix.EAGAIN || err == unix.EINTR) && i < maxRetries {
			continue
		}
		return -1, &fs.PathError{Op: op, Path: name, Err: err}
	}
}

// relative turns a name inside the Root into the path openat2 gets: leading
// slashes dropped ("/" is the Root), everything else left to the kernel.
func relative(name string) string {
	p := strings.TrimLeft(name, "/")
	if p == "" {
		return "."
	}
	return p
}

// clean is path.Clean of name as a path inside the Root, without the
// leading slash ("." for the Root). For messages and Root names only.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// parent is a name split into the directory holding it (resolved to an fd)
// and its last component.
type parent struct {
	fd   int    // O_PATH descriptor of the directory; close it
	base string // the last component: never empty, never contains "/"
	// slash is set when the name had a trailing slash: the object must be
	// a directory.
	slash bool
	// dot is set when base is "." or "..": it names a directory reached
	// by resolution, not an entry that can be created, removed or renamed.
	dot bool
}

// splitName splits name into its directory part and last component, with
// trailing slashes removed and reported.
func splitName(name string) (dir, base string, slash bool) {
	p := strings.TrimLeft(name, "/")
	trimmed := strings.TrimRight(p, "/")
	slash = len(trimmed) < len(p)
	if trimmed == "" {
		return "", ".", slash
	}
	if i := strings.LastIndexByte(trimmed, '/'); i >= 0 {
		return trimmed[:i], trimmed[i+1:], slash
	}
	return "", trimmed, slash
}

// openParent resolves the directory holding name's last component.
func (r *Root) openParent(op, name string) (parent, error) {
	if name == "" {
		return parent{fd: -1}, &fs.PathError{Op: op, Path: name, Err: unix.ENOENT}
	}
	dir, base, slash := splitName(name)
	if dir == "" {
		dir = "."
	}
	fd, err := r.openat2(op, dir, unix.O_PATH|unix.O_DIRECTORY, 0, 0)
	if err != nil {
		// Report the name the caller gave, not its directory part.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			pe.Path = name
		}
		return parent{fd: -1}, err
	}
	return parent{fd: fd, base: base, slash: slash, dot: base == "." || base == ".."}, nil
}

func (p parent) close() {
	if p.fd >= 0 {
		unix.Close(p.fd)
	}
}

// procPath names an open descriptor through /proc/self/fd, for the few
// calls that cannot take an O_PATH descriptor directly (fchmod, futimens).
// The kernel resolves it to the open file itself, never by name.
func procPath(fd int) string {
	return fmt.Sprintf("/proc/self/fd/%d", fd)
}

// pathErr wraps a kernel error for name; nil stays nil.
func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// retryEINTR calls f until it does not fail with EINTR.
func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// newFile wraps an fd opened through a Root as an *os.File named after the
// Root-relative name.
func (r *Root) newFile(fd int, name string) *os.File {
	return os.NewFile(uintptr(fd), path.Join(r.name, clean(name)))
}
