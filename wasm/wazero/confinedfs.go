package wazero

import (
	"io/fs"
	"path"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// confinedFS is a host directory as a WASI file system whose symlinks cannot
// lead outside it. wazero's own directory mount refuses ".." in guest paths
// but lets the host follow symlinks, so a guest could create
// "x -> ../../../etc/shadow" in a writable mount (or an image could ship an
// absolute link) and read host files through it. Here every path is first
// resolved with securejoin, symlinks included, as if the directory were the
// root of the file system (an absolute link target starts at the directory,
// ".." stops there), and only the resolved, symlink-free path reaches the
// underlying wazero directory file system.
//
// A process outside the guest that swaps a directory for a symlink between
// the check and the use can still race it; guests alone cannot.
type confinedFS struct {
	experimentalsys.FS // the wazero directory file system over root
	root               string
}

func newConfinedFS(dir string) *confinedFS {
	root := filepath.Clean(dir)
	return &confinedFS{FS: sysfs.DirFS(root), root: root}
}

// resolve turns a guest path relative to the mount into one without
// symlinks. With followLast false the last component itself is kept as is
// (for operations on a link rather than its target).
func (c *confinedFS) resolve(p string, followLast bool) (string, experimentalsys.Errno) {
	trailing := strings.HasSuffix(p, "/")
	clean := path.Clean("/" + p)
	if clean == "/" {
		return p, 0
	}
	var host string
	if followLast || trailing {
		h, err := securejoin.SecureJoin(c.root, clean)
		if err != nil {
			return "", experimentalsys.UnwrapOSError(err)
		}
		host = h
	} else {
		dir, base := path.Split(clean)
		h, err := securejoin.SecureJoin(c.root, dir)
		if err != nil {
			return "", experimentalsys.UnwrapOSError(err)
		}
		host = filepath.Join(h, base)
	}
	rel, err := filepath.Rel(c.root, host)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", experimentalsys.EPERM
	}
	if trailing && rel != "." {
		rel += "/"
	}
	return rel, 0
}

// OpenFile implements experimentalsys.FS.
func (c *confinedFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	rel, errno := c.resolve(p, flag&experimentalsys.O_NOFOLLOW == 0)
	if errno != 0 {
		return nil, errno
	}
	return c.FS.OpenFile(rel, flag, perm)
}

// Lstat implements experimentalsys.FS.
func (c *confinedFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	rel, errno := c.resolve(p, false)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return c.FS.Lstat(rel)
}

// Stat implements experimentalsys.FS.
func (c *confinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	rel, errno := c.resolve(p, true)
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	return c.FS.Stat(rel)
}

// Mkdir implements experimentalsys.FS.
func (c *confinedFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	rel, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Mkdir(rel, perm)
}

// Chmod implements experimentalsys.FS.
func (c *confinedFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	rel, errno := c.resolve(p, true)
	if errno != 0 {
		return errno
	}
	return c.FS.Chmod(rel, perm)
}

// Rename implements experimentalsys.FS.
func (c *confinedFS) Rename(from, to string) experimentalsys.Errno {
	relFrom, errno := c.resolve(from, false)
	if errno != 0 {
		return errno
	}
	relTo, errno := c.resolve(to, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Rename(relFrom, relTo)
}

// Rmdir implements experimentalsys.FS.
func (c *confinedFS) Rmdir(p string) experimentalsys.Errno {
	rel, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Rmdir(rel)
}

// Unlink implements experimentalsys.FS.
func (c *confinedFS) Unlink(p string) experimentalsys.Errno {
	rel, errno := c.resolve(p, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Unlink(rel)
}

// Link implements experimentalsys.FS.
func (c *confinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	relOld, errno := c.resolve(oldPath, false)
	if errno != 0 {
		return errno
	}
	relNew, errno := c.resolve(newPath, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Link(relOld, relNew)
}

// Symlink implements experimentalsys.FS. The target is stored as written: it
// is resolved inside the mount whenever it is followed.
func (c *confinedFS) Symlink(target, linkName string) experimentalsys.Errno {
	rel, errno := c.resolve(linkName, false)
	if errno != 0 {
		return errno
	}
	return c.FS.Symlink(target, rel)
}

// Readlink implements experimentalsys.FS.
func (c *confinedFS) Readlink(p string) (string, experimentalsys.Errno) {
	rel, errno := c.resolve(p, false)
	if errno != 0 {
		return "", errno
	}
	return c.FS.Readlink(rel)
}

// Utimens implements experimentalsys.FS.
func (c *confinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	rel, errno := c.resolve(p, true)
	if errno != 0 {
		return errno
	}
	return c.FS.Utimens(rel, atim, mtim)
}
