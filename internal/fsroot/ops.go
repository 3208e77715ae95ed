package fsroot

import (
	"errors"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenFile opens name inside r with the open(2) flags flag (O_CLOEXEC is
// always added) and, when creating, the mode perm. Without O_NOFOLLOW a
// final symlink is followed, inside r; with O_CREAT a dangling final
// symlink creates its target, inside r.
func (r *Root) OpenFile(name string, flag int, perm uint32) (*os.File, error) {
	fd, err := r.openat2("open", name, flag, perm, 0)
	if err != nil {
		return nil, err
	}
	return r.newFile(fd, name), nil
}

// OpenFd is OpenFile returning the bare descriptor, which the caller owns
// and closes: for hosts (the WASI layer) that act on descriptors with
// system calls and keep no *os.File.
func (r *Root) OpenFd(name string, flag int, perm uint32) (int, error) {
	return r.openat2("open", name, flag, perm, 0)
}

// Adopt makes dirfd, a directory descriptor the caller opened through r
// (with OpenFd, say), a Root of its own with r's options: lookups from it
// stay inside that directory. The new Root owns dirfd and closes it in
// Close; name is for messages only.
func (r *Root) Adopt(dirfd int, name string) *Root {
	return &Root{fd: dirfd, name: path.Join(r.name, clean(name)), resolve: r.resolve}
}

// Open opens name inside r for reading.
func (r *Root) Open(name string) (*os.File, error) {
	return r.OpenFile(name, unix.O_RDONLY, 0)
}

// OpenPath returns an O_PATH descriptor of name inside r (following a final
// symlink unless nofollow), for callers that act on the object itself, for
// instance to mount onto /proc/self/fd/N. The caller closes it.
func (r *Root) OpenPath(name string, nofollow bool) (int, error) {
	flags := unix.O_PATH
	if nofollow {
		flags |= unix.O_NOFOLLOW
	}
	return r.openat2("open", name, flags, 0, 0)
}

// Stat returns the status of name inside r, following a final symlink
// inside r.
func (r *Root) Stat(name string) (unix.Stat_t, error) {
	return r.stat("stat", name, unix.O_PATH)
}

// Lstat returns the status of name inside r; a final symlink is not
// followed (unless the name ends in a slash).
func (r *Root) Lstat(name string) (unix.Stat_t, error) {
	return r.stat("lstat", name, unix.O_PATH|unix.O_NOFOLLOW)
}

func (r *Root) stat(op, name string, flags int) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := r.openat2(op, name, flags, 0, 0)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	err = unix.Fstat(fd, &st)
	return st, pathErr(op, name, err)
}

// Readlink returns the target of the symlink name inside r, as stored. It
// fails with EINVAL when name is not a symlink.
func (r *Root) Readlink(name string) (string, error) {
	fd, err := r.openat2("readlink", name, unix.O_PATH|unix.O_NOFOLLOW, 0, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			if err == unix.ENOENT {
				// readlinkat(fd, "") of a non-link: POSIX says EINVAL.
				err = unix.EINVAL
			}
			return "", pathErr("readlink", name, err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// Mkdir creates the directory name inside r with mode perm (less umask).
func (r *Root) Mkdir(name string, perm uint32) error {
	p, err := r.openParent("mkdir", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot {
		return pathErr("mkdir", name, unix.EEXIST)
	}
	return pathErr("mkdir", name, retryEINTR(func() error { return unix.Mkdirat(p.fd, p.base, perm) }))
}

// MkdirAll creates name and every missing directory above it inside r, each
// with mode perm (less umask). Existing symlinks on the way are followed,
// inside r. It fails with ENOTDIR if a component exists and is not a
// directory.
func (r *Root) MkdirAll(name string, perm uint32) error {
	full := clean(name)
	if full == "." {
		return nil
	}
	parts := strings.Split(full, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		err := r.Mkdir(sub, perm)
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		st, serr := r.Stat(sub)
		if serr != nil {
			return serr
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return pathErr("mkdir", sub, unix.ENOTDIR)
		}
	}
	return nil
}

// withSlash puts back a trailing slash the caller wrote, so that the kernel
// applies its must-be-a-directory rules to the last component (it never
// follows the last component of unlink, rmdir, rename, mkdir).
func (p parent) withSlash() string {
	if p.slash {
		return p.base + "/"
	}
	return p.base
}

// Unlink removes the non-directory name inside r (a symlink itself, not its
// target).
func (r *Root) Unlink(name string) error {
	p, err := r.openParent("unlink", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot {
		return pathErr("unlink", name, unix.EISDIR)
	}
	return pathErr("unlink", name, unix.Unlinkat(p.fd, p.withSlash(), 0))
}

// Rmdir removes the empty directory name inside r.
func (r *Root) Rmdir(name string) error {
	p, err := r.openParent("rmdir", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot {
		if p.base == "." {
			return pathErr("rmdir", name, unix.EINVAL)
		}
		return pathErr("rmdir", name, unix.ENOTEMPTY)
	}
	return pathErr("rmdir", name, unix.Unlinkat(p.fd, p.withSlash(), unix.AT_REMOVEDIR))
}

// Rename renames from to to, both inside r, replacing to if it exists as
// rename(2) does. Neither last component is followed.
func (r *Root) Rename(from, to string) error {
	return r.rename(from, to, 0)
}

// RenameNoReplace is Rename that fails with EEXIST when to exists
// (renameat2 RENAME_NOREPLACE).
func (r *Root) RenameNoReplace(from, to string) error {
	return r.rename(from, to, unix.RENAME_NOREPLACE)
}

// RenameTo renames from inside r to to inside dst (another Root, or r),
// replacing to if it exists. Neither last component is followed. Renaming
// across file systems fails with EXDEV, as rename(2) does.
func (r *Root) RenameTo(from string, dst *Root, to string) error {
	return rename(r, from, dst, to, 0)
}

func (r *Root) rename(from, to string, flags uint) error {
	return rename(r, from, r, to, flags)
}

func rename(r *Root, from string, dst *Root, to string, flags uint) error {
	pf, err := r.openParent("rename", from)
	if err != nil {
		return err
	}
	defer pf.close()
	pt, err := dst.openParent("rename", to)
	if err != nil {
		return err
	}
	defer pt.close()
	if pf.dot || pt.dot {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: unix.EBUSY}
	}
	if err := unix.Renameat2(pf.fd, pf.withSlash(), pt.fd, pt.withSlash(), flags); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// Link creates the hard link newname to the existing oldname, both inside
// r. A final symlink in oldname is linked itself, not followed.
func (r *Root) Link(oldname, newname string) error {
	return r.LinkTo(oldname, r, newname)
}

// LinkTo creates the hard link newname inside dst (another Root, or r) to
// the existing oldname inside r. A final symlink in oldname is linked
// itself, not followed.
func (r *Root) LinkTo(oldname string, dst *Root, newname string) error {
	po, err := r.openParent("link", oldname)
	if err != nil {
		return err
	}
	defer po.close()
	if po.dot || po.slash {
		// A directory (or, with a trailing slash, something that must
		// be one): resolve it inside r for the right error, never link.
		st, err := r.Stat(oldname)
		if err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: unix.EPERM}
		}
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: unix.ENOTDIR}
	}
	pn, err := dst.openParent("link", newname)
	if err != nil {
		return err
	}
	defer pn.close()
	if pn.dot {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: unix.EEXIST}
	}
	if err := unix.Linkat(po.fd, po.base, pn.fd, pn.withSlash(), 0); err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// Symlink creates the symlink name inside r pointing at target, stored as
// given. Whenever it is followed through r it resolves inside r.
func (r *Root) Symlink(target, name string) error {
	p, err := r.openParent("symlink", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot {
		return pathErr("symlink", name, unix.EEXIST)
	}
	return pathErr("symlink", name, unix.Symlinkat(target, p.fd, p.withSlash()))
}

// Mknod creates the special file or fifo name inside r (mknodat(2)).
func (r *Root) Mknod(name string, mode uint32, dev int) error {
	p, err := r.openParent("mknod", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot {
		return pathErr("mknod", name, unix.EEXIST)
	}
	return pathErr("mknod", name, unix.Mknodat(p.fd, p.withSlash(), mode, dev))
}

// Chmod changes the mode of name inside r, following a final symlink
// inside r.
func (r *Root) Chmod(name string, mode uint32) error {
	fd, err := r.openat2("chmod", name, unix.O_PATH, 0, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// fchmod refuses O_PATH descriptors; the /proc/self/fd link names the
	// open file itself.
	return pathErr("chmod", name, unix.Fchmodat(unix.AT_FDCWD, procPath(fd), mode, 0))
}

// Chown changes the owner of name inside r, following a final symlink
// inside r; -1 leaves an id unchanged.
func (r *Root) Chown(name string, uid, gid int) error {
	return r.chown("chown", name, uid, gid, unix.O_PATH)
}

// Lchown changes the owner of name inside r itself (a final symlink is not
// followed); -1 leaves an id unchanged.
func (r *Root) Lchown(name string, uid, gid int) error {
	return r.chown("lchown", name, uid, gid, unix.O_PATH|unix.O_NOFOLLOW)
}

func (r *Root) chown(op, name string, uid, gid, flags int) error {
	fd, err := r.openat2(op, name, flags, 0, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return pathErr(op, name, unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW))
}

// Chtimes sets the access and modification times of name inside r,
// following a final symlink inside r. A time with Nsec unix.UTIME_OMIT is
// left unchanged, unix.UTIME_NOW sets the current time.
func (r *Root) Chtimes(name string, ts [2]unix.Timespec) error {
	fd, err := r.openat2("utimes", name, unix.O_PATH, 0, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return pathErr("utimes", name, unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd), ts[:], 0))
}

// Lchtimes is Chtimes on a final symlink itself rather than its target.
func (r *Root) Lchtimes(name string, ts [2]unix.Timespec) error {
	p, err := r.openParent("utimes", name)
	if err != nil {
		return err
	}
	defer p.close()
	if p.dot || p.slash {
		// "." and ".." are directories; a trailing slash follows.
		return r.Chtimes(name, ts)
	}
	return pathErr("utimes", name, unix.UtimesNanoAt(p.fd, p.base, ts[:], unix.AT_SYMLINK_NOFOLLOW))
}

// RemoveAll removes name inside r and, if it is a directory, everything
// below it, never following a symlink: a link is removed itself. The walk
// goes from directory fd to directory fd (openat of one name with
// O_NOFOLLOW), so a concurrent rename cannot lead it outside r. A missing
// name is not an error.
func (r *Root) RemoveAll(name string) error {
	p, err := r.openParent("removeall", name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	defer p.close()
	if p.dot {
		return pathErr("removeall", name, unix.EINVAL)
	}
	return pathErr("removeall", name, removeAt(p.fd, p.base, 0))
}

// maxRemoveDepth bounds RemoveAll's recursion (and its open descriptors).
const maxRemoveDepth = 256

// removeAt removes base in the directory dirfd, recursively.
func removeAt(dirfd int, base string, depth int) error {
	err := unix.Unlinkat(dirfd, base, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	if depth >= maxRemoveDepth {
		return unix.ELOOP
	}
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), base)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeAt(fd, n, depth+1); err != nil {
			return err
		}
	}
	err = unix.Unlinkat(dirfd, base, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}
