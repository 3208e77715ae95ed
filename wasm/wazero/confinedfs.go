package wazero

import (
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"
	"unsafe"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// confinedFS is a host directory as a WASI file system that a guest cannot
// leave, not even by racing renames against its own lookups or another
// guest's. wazero's own directory mount (sysfs.DirFS) joins guest paths onto
// the host path and lets the kernel follow symlinks, so a link in the
// directory leads anywhere on the host; checking a path first and reopening
// it by name afterwards loses to a second guest that swaps a directory for
// a symlink in between. Here every path is resolved once by the kernel with
// openat2(RESOLVE_IN_ROOT) from the mount's directory fd (package fsroot):
// absolute symlinks and ".." stay inside the mount, and every operation
// acts on the fd it found. Files are served from their fds (rootFile); no
// name is ever reopened.
//
// Like wazero's directory mount, it refuses to create symlinks with an
// absolute target (EPERM), as the WASI path-resolution rules ask; absolute
// links already in the directory resolve inside the mount.
type confinedFS struct {
	root *fsroot.Root
}

var _ experimentalsys.FS = (*confinedFS)(nil)

// newConfinedFS opens dir as the root of a confined file system; close it
// with close when the guest is done.
func newConfinedFS(dir string) (*confinedFS, error) {
	r, err := fsroot.Open(dir)
	if err != nil {
		return nil, err
	}
	return &confinedFS{root: r}, nil
}

func (c *confinedFS) close() error { return c.root.Close() }

// toErrno maps a host error to the guest's errno. wazero's Errno set has no
// EMFILE or ENFILE and maps them to EIO; the fd limit of the guest's
// instance (wasm/wazero's open-file limit) is what the guest should meet
// first.
func toErrno(err error) experimentalsys.Errno {
	return experimentalsys.UnwrapOSError(err)
}

// toOpenFlags translates wazero's open flags to open(2) flags.
func toOpenFlags(oflag experimentalsys.Oflag) int {
	var flag int
	switch oflag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY) {
	case experimentalsys.O_RDWR:
		flag = unix.O_RDWR
	case experimentalsys.O_WRONLY:
		flag = unix.O_WRONLY
	default:
		flag = unix.O_RDONLY
	}
	for _, m := range []struct {
		o experimentalsys.Oflag
		u int
	}{
		{experimentalsys.O_APPEND, unix.O_APPEND},
		{experimentalsys.O_CREAT, unix.O_CREAT},
		{experimentalsys.O_DIRECTORY, unix.O_DIRECTORY},
		{experimentalsys.O_DSYNC, unix.O_DSYNC},
		{experimentalsys.O_EXCL, unix.O_EXCL},
		{experimentalsys.O_NOFOLLOW, unix.O_NOFOLLOW},
		{experimentalsys.O_NONBLOCK, unix.O_NONBLOCK},
		{experimentalsys.O_RSYNC, unix.O_RSYNC},
		{experimentalsys.O_SYNC, unix.O_SYNC},
		{experimentalsys.O_TRUNC, unix.O_TRUNC},
	} {
		if oflag&m.o != 0 {
			flag |= m.u
		}
	}
	return flag
}

// perm keeps the permission and set-id/sticky bits of a mode for the kernel.
func perm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		p |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		p |= unix.S_ISVTX
	}
	return p
}

// OpenFile implements experimentalsys.FS.
func (c *confinedFS) OpenFile(p string, flag experimentalsys.Oflag, mode fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	f, err := c.root.OpenFile(p, toOpenFlags(flag), perm(mode))
	if err != nil {
		return nil, toErrno(err)
	}
	rf := &rootFile{f: f, fd: int(f.Fd()), flag: flag}
	rf.seekMethod.f = rf
	return rf, 0
}

// Lstat implements experimentalsys.FS.
func (c *confinedFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	st, err := c.root.Lstat(p)
	if err != nil {
		return sys.Stat_t{}, toErrno(err)
	}
	return toStat(&st), 0
}

// Stat implements experimentalsys.FS.
func (c *confinedFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	st, err := c.root.Stat(p)
	if err != nil {
		return sys.Stat_t{}, toErrno(err)
	}
	return toStat(&st), 0
}

// Mkdir implements experimentalsys.FS.
func (c *confinedFS) Mkdir(p string, mode fs.FileMode) experimentalsys.Errno {
	return toErrno(c.root.Mkdir(p, perm(mode)))
}

// Chmod implements experimentalsys.FS.
func (c *confinedFS) Chmod(p string, mode fs.FileMode) experimentalsys.Errno {
	return toErrno(c.root.Chmod(p, perm(mode)))
}

// Rename implements experimentalsys.FS.
func (c *confinedFS) Rename(from, to string) experimentalsys.Errno {
	return toErrno(c.root.Rename(from, to))
}

// Rmdir implements experimentalsys.FS.
func (c *confinedFS) Rmdir(p string) experimentalsys.Errno {
	return toErrno(c.root.Rmdir(p))
}

// Unlink implements experimentalsys.FS.
func (c *confinedFS) Unlink(p string) experimentalsys.Errno {
	return toErrno(c.root.Unlink(p))
}

// Link implements experimentalsys.FS.
func (c *confinedFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return toErrno(c.root.Link(oldPath, newPath))
}

// Symlink implements experimentalsys.FS. The target is stored as written
// and resolved inside the mount whenever it is followed; absolute targets
// are refused as by wazero's own directory mount.
func (c *confinedFS) Symlink(target, linkName string) experimentalsys.Errno {
	if path.IsAbs(target) {
		return experimentalsys.EPERM
	}
	return toErrno(c.root.Symlink(target, linkName))
}

// Readlink implements experimentalsys.FS.
func (c *confinedFS) Readlink(p string) (string, experimentalsys.Errno) {
	s, err := c.root.Readlink(p)
	if err != nil {
		return "", toErrno(err)
	}
	return s, 0
}

// Utimens implements experimentalsys.FS; a final symlink is followed, as
// by utimensat(2) without AT_SYMLINK_NOFOLLOW.
func (c *confinedFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	ts := toTimespecs(atim, mtim)
	if ts[0].Nsec == unix.UTIME_OMIT && ts[1].Nsec == unix.UTIME_OMIT {
		// Nothing to change; still report a missing file.
		_, errno := c.Stat(p)
		return errno
	}
	return toErrno(c.root.Chtimes(p, ts))
}

// toTimespecs turns wazero's epoch nanoseconds (or UTIME_OMIT) into
// utimensat(2) times.
func toTimespecs(atim, mtim int64) [2]unix.Timespec {
	conv := func(ns int64) unix.Timespec {
		if ns == experimentalsys.UTIME_OMIT {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.NsecToTimespec(ns)
	}
	return [2]unix.Timespec{conv(atim), conv(mtim)}
}

// toStat converts a kernel stat to wazero's.
func toStat(st *unix.Stat_t) sys.Stat_t {
	return sys.Stat_t{
		Dev:   st.Dev,
		Ino:   st.Ino,
		Mode:  fileMode(st.Mode),
		Nlink: uint64(st.Nlink),
		Size:  st.Size,
		Atim:  st.Atim.Nano(),
		Mtim:  st.Mtim.Nano(),
		Ctim:  st.Ctim.Nano(),
	}
}

// fileMode converts a kernel st_mode to an fs.FileMode as package os does.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// direntType converts a getdents d_type to an fs.FileMode type.
func direntType(t uint8) (fs.FileMode, bool) {
	switch t {
	case unix.DT_REG:
		return 0, true
	case unix.DT_DIR:
		return fs.ModeDir, true
	case unix.DT_LNK:
		return fs.ModeSymlink, true
	case unix.DT_BLK:
		return fs.ModeDevice, true
	case unix.DT_CHR:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case unix.DT_FIFO:
		return fs.ModeNamedPipe, true
	case unix.DT_SOCK:
		return fs.ModeSocket, true
	}
	return 0, false
}

// rootFile is a file or directory a guest opened through confinedFS,
// served from its fd alone: reads, writes, stat, times, truncation,
// appending mode and directory listing (getdents, rewound with lseek) never
// go back to a name.
type rootFile struct {
	seekMethod[int64] // Seek, pointing back at this rootFile

	f      *os.File // owns fd
	fd     int
	flag   experimentalsys.Oflag
	closed bool

	statted bool // dev, ino, isDir are cached
	dev     uint64
	ino     sys.Inode
	isDir   bool

	// Directory listing state: a getdents buffer and the unread part.
	dirBuf  []byte
	dirRest []byte
	dirEOF  bool
}

var _ experimentalsys.File = (*rootFile)(nil)

func (f *rootFile) cached() experimentalsys.Errno {
	if f.statted {
		return 0
	}
	_, errno := f.Stat()
	return errno
}

// Dev implements experimentalsys.File.
func (f *rootFile) Dev() (uint64, experimentalsys.Errno) {
	errno := f.cached()
	return f.dev, errno
}

// Ino implements experimentalsys.File.
func (f *rootFile) Ino() (sys.Inode, experimentalsys.Errno) {
	errno := f.cached()
	return f.ino, errno
}

// IsDir implements experimentalsys.File.
func (f *rootFile) IsDir() (bool, experimentalsys.Errno) {
	errno := f.cached()
	return f.isDir, errno
}

// IsAppend implements experimentalsys.File.
func (f *rootFile) IsAppend() bool { return f.flag&experimentalsys.O_APPEND != 0 }

// SetAppend implements experimentalsys.File with fcntl(F_SETFL) on the fd
// (wazero's own file reopens the path instead).
func (f *rootFile) SetAppend(enable bool) experimentalsys.Errno {
	if f.closed {
		return experimentalsys.EBADF
	}
	fl, err := unix.FcntlInt(uintptr(f.fd), unix.F_GETFL, 0)
	if err != nil {
		return toErrno(err)
	}
	if enable {
		fl |= unix.O_APPEND
	} else {
		fl &^= unix.O_APPEND
	}
	if _, err := unix.FcntlInt(uintptr(f.fd), unix.F_SETFL, fl); err != nil {
		return toErrno(err)
	}
	if enable {
		f.flag |= experimentalsys.O_APPEND
	} else {
		f.flag &^= experimentalsys.O_APPEND
	}
	return 0
}

// Stat implements experimentalsys.File.
func (f *rootFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	if f.closed {
		return sys.Stat_t{}, experimentalsys.EBADF
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return sys.Stat_t{}, toErrno(err)
	}
	s := toStat(&st)
	f.statted, f.dev, f.ino, f.isDir = true, s.Dev, s.Ino, s.Mode.IsDir()
	return s, 0
}

// Read implements experimentalsys.File.
func (f *rootFile) Read(buf []byte) (int, experimentalsys.Errno) {
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Read(f.fd, buf) })
	return max(n, 0), toErrno(err)
}

// Pread implements experimentalsys.File.
func (f *rootFile) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Pread(f.fd, buf, off) })
	return max(n, 0), toErrno(err)
}

// seekMethod gives rootFile the Seek method of experimentalsys.File. It is
// generic only because go vet's stdmethods check insists that any method
// named Seek has io.Seeker's signature, which wazero's interface does not
// (it returns an Errno); with a type parameter for the offset vet leaves it
// alone, and seekMethod[int64] has exactly wazero's signature.
type seekMethod[Off ~int64] struct{ f *rootFile }

// Seek implements experimentalsys.File for the rootFile; see rootFile.seek.
func (s seekMethod[Off]) Seek(offset Off, whence int) (int64, experimentalsys.Errno) {
	return s.f.seek(int64(offset), whence)
}

// seek moves the file offset. A directory can only be rewound (offset 0
// from the start), which restarts its listing.
func (f *rootFile) seek(offset int64, whence int) (int64, experimentalsys.Errno) {
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if isDir, errno := f.IsDir(); errno != 0 {
		return 0, errno
	} else if isDir {
		if offset != 0 || whence != io.SeekStart {
			return 0, experimentalsys.EISDIR
		}
		if _, err := unix.Seek(f.fd, 0, io.SeekStart); err != nil {
			return 0, toErrno(err)
		}
		f.dirRest, f.dirEOF = nil, false
		return 0, 0
	}
	n, err := unix.Seek(f.fd, offset, whence)
	return n, toErrno(err)
}

// Readdir implements experimentalsys.File: up to n entries (all when n <=
// 0) without "." and "..", each with its inode and type; fewer than n only
// at the end of the directory.
func (f *rootFile) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if f.closed {
		return nil, experimentalsys.EBADF
	}
	if isDir, errno := f.IsDir(); errno != 0 {
		return nil, errno
	} else if !isDir {
		return nil, experimentalsys.EBADF
	}
	var out []experimentalsys.Dirent
	for n <= 0 || len(out) < n {
		if len(f.dirRest) == 0 {
			if f.dirEOF {
				break
			}
			if f.dirBuf == nil {
				f.dirBuf = make([]byte, 8192)
			}
			m, err := ignoringEINTR(func() (int, error) { return unix.Getdents(f.fd, f.dirBuf) })
			if err != nil {
				return nil, toErrno(err)
			}
			if m <= 0 {
				f.dirEOF = true
				break
			}
			f.dirRest = f.dirBuf[:m]
		}
		d, ok := f.nextDirent()
		if ok {
			out = append(out, d)
		}
	}
	return out, 0
}

// nextDirent takes one linux_dirent64 off dirRest; ok is false for "." and
// "..", which wazero adds itself.
func (f *rootFile) nextDirent() (d experimentalsys.Dirent, ok bool) {
	// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
	const nameOff = 19
	b := f.dirRest
	if len(b) < nameOff {
		f.dirRest = nil
		return d, false
	}
	reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
	if reclen < nameOff || reclen > len(b) {
		f.dirRest = nil
		return d, false
	}
	ino := *(*uint64)(unsafe.Pointer(&b[0]))
	typ := b[18]
	name := b[nameOff:reclen]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	f.dirRest = b[reclen:]
	if s := string(name); s == "." || s == ".." {
		return d, false
	}
	d = experimentalsys.Dirent{Ino: ino, Name: string(name)}
	if t, known := direntType(typ); known {
		d.Type = t
	} else {
		// DT_UNKNOWN (some file systems): one fstatat of a single name
		// in this directory, not followed.
		var st unix.Stat_t
		if unix.Fstatat(f.fd, d.Name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			d.Type = fileMode(st.Mode).Type()
		}
	}
	return d, true
}

// Write implements experimentalsys.File.
func (f *rootFile) Write(buf []byte) (int, experimentalsys.Errno) {
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Write(f.fd, buf) })
	return max(n, 0), toErrno(err)
}

// Pwrite implements experimentalsys.File.
func (f *rootFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	if f.closed {
		return 0, experimentalsys.EBADF
	}
	if len(buf) == 0 {
		return 0, 0
	}
	n, err := ignoringEINTR(func() (int, error) { return unix.Pwrite(f.fd, buf, off) })
	return max(n, 0), toErrno(err)
}

// Truncate implements experimentalsys.File.
func (f *rootFile) Truncate(size int64) experimentalsys.Errno {
	if f.closed {
		return experimentalsys.EBADF
	}
	if size < 0 {
		return experimentalsys.EINVAL
	}
	if isDir, _ := f.IsDir(); isDir {
		return experimentalsys.EISDIR
	}
	return toErrno(unix.Ftruncate(f.fd, size))
}

// Sync implements experimentalsys.File.
func (f *rootFile) Sync() experimentalsys.Errno {
	if f.closed {
		return experimentalsys.EBADF
	}
	return toErrno(unix.Fsync(f.fd))
}

// Datasync implements experimentalsys.File.
func (f *rootFile) Datasync() experimentalsys.Errno {
	if f.closed {
		return experimentalsys.EBADF
	}
	return toErrno(unix.Fdatasync(f.fd))
}

// Utimens implements experimentalsys.File with futimens(2) on the fd.
func (f *rootFile) Utimens(atim, mtim int64) experimentalsys.Errno {
	if f.closed {
		return experimentalsys.EBADF
	}
	ts := toTimespecs(atim, mtim)
	if ts[0].Nsec == unix.UTIME_OMIT && ts[1].Nsec == unix.UTIME_OMIT {
		return 0
	}
	// utimensat(fd, NULL, ...) is futimens: it acts on the fd itself.
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(f.fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return toErrno(e)
	}
	return 0
}

// Close implements experimentalsys.File.
func (f *rootFile) Close() experimentalsys.Errno {
	if f.closed {
		return 0
	}
	f.closed = true
	return toErrno(f.f.Close())
}

// ignoringEINTR retries a system call interrupted by a signal (the Go
// runtime's preemption signals interrupt blocking calls).
func ignoringEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != syscall.EINTR {
			return n, err
		}
	}
}
