package wasip1

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"unsafe"

	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// iovecs reads the guest's iovec (or ciovec) array of n entries at iovs as
// views of its memory.
// More than iovMax entries is EINVAL, as for readv(2) (wasi-libc's
// IOV_MAX).
func (in *Instance) iovecs(mod api.Module, iovs, n uint32) ([][]byte, Errno) {
	if n > iovMax {
		return nil, ErrnoInval
	}
	arr, e := read(mod, iovs, n*sizeIovec)
	if e != 0 {
		return nil, e
	}
	bufs := in.iov[:0]
	for i := uint32(0); i < n; i++ {
		off := binary.LittleEndian.Uint32(arr[i*8:])
		l := binary.LittleEndian.Uint32(arr[i*8+4:])
		b, e := read(mod, off, l)
		if e != 0 {
			return nil, e
		}
		bufs = append(bufs, b)
	}
	in.iov = bufs
	return bufs, 0
}

const iovMax = 1024

// retry calls f until it does not fail with EINTR.
func retry[T any](f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err != unix.EINTR {
			return v, err
		}
	}
}

func fdRead(in *Instance, ctx context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getReadable(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	bufs, errno := in.iovecs(mod, uint32(s[1]), uint32(s[2]))
	if errno != 0 {
		return errno
	}
	var n int
	if e.kind == kindStdin {
		if n, errno = e.readStdin(ctx, bufs); errno != 0 {
			return errno
		}
	} else {
		var err error
		for {
			n, err = retry(func() (int, error) { return unix.Readv(e.hostFd, bufs) })
			if err != unix.EAGAIN || !e.blocking() {
				break
			}
			if errno := in.waitFd(ctx, e.hostFd, unix.POLLIN); errno != 0 {
				return errno
			}
		}
		if err != nil {
			return toErrno(err)
		}
	}
	return putU32(mod, uint32(s[3]), uint32(n))
}

// getReadable returns an fd that fd_read can read: stdin or a file with
// the fd_read right.
func (in *Instance) getReadable(fd uint32) (*fdEntry, Errno) {
	e, errno := in.get(fd)
	if errno != 0 {
		return nil, errno
	}
	if e.kind == kindDir {
		return nil, ErrnoBadf
	}
	if e.base&RightFdRead == 0 {
		return nil, ErrnoNotcapable
	}
	return e, 0
}

// readStdin reads the guest's stdin: blocking until input comes (or the
// run is stopped: EINTR), or EAGAIN at once when the guest set nonblock.
func (e *fdEntry) readStdin(ctx context.Context, bufs [][]byte) (int, Errno) {
	size := 0
	for _, b := range bufs {
		size += len(b)
	}
	if size == 0 {
		return 0, 0 // as read(2) of 0 bytes: no wait
	}
	if e.flags&fdflagNonblock == 0 {
		if n, stopped, ok := e.in.readDirect(ctx, bufs); ok {
			switch {
			case stopped:
				return 0, ErrnoIntr
			case n == 0 && e.in.err != nil && !isEOF(e.in.err):
				return 0, ErrnoIo
			}
			return n, 0
		}
	}
	if !e.in.wait(ctx.Done(), e.flags&fdflagNonblock == 0, size) {
		if e.flags&fdflagNonblock != 0 {
			return 0, ErrnoAgain
		}
		return 0, ErrnoIntr
	}
	n := e.in.read(bufs)
	if n == 0 && e.in.err != nil && !isEOF(e.in.err) {
		return 0, ErrnoIo
	}
	return n, 0
}

// blocking reports whether a read or write of e that would block must
// wait (in waitFd) rather than fail with EAGAIN: the guest did not ask
// for nonblock but the host fd is non-blocking.
func (e *fdEntry) blocking() bool {
	return e.hostNonblock && e.flags&fdflagNonblock == 0
}

func fdWrite(in *Instance, ctx context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.get(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	if e.kind == kindDir {
		return ErrnoBadf
	}
	if e.base&RightFdWrite == 0 {
		return ErrnoNotcapable
	}
	bufs, errno := in.iovecs(mod, uint32(s[1]), uint32(s[2]))
	if errno != 0 {
		return errno
	}
	n := 0
	if e.kind == kindStdout {
		var err error
		if n, err = in.writeOut(e.out, bufs); err != nil && n == 0 {
			return toErrno(err)
		}
	} else {
		var err error
		for {
			n, err = retry(func() (int, error) { return unix.Writev(e.hostFd, bufs) })
			if err != unix.EAGAIN || !e.blocking() {
				break
			}
			if errno := in.waitFd(ctx, e.hostFd, unix.POLLOUT); errno != 0 {
				return errno
			}
		}
		if err != nil {
			return toErrno(err)
		}
	}
	return putU32(mod, uint32(s[3]), uint32(n))
}

// writeOut writes the iovecs of one fd_write to stdout or stderr in one
// Write: wasi-libc's stdio hands over its buffer and the new data as two
// iovecs, and one write keeps a line whole for whoever reads the stream.
func (in *Instance) writeOut(w io.Writer, bufs [][]byte) (int, error) {
	var one []byte
	joined := false
	for _, b := range bufs {
		switch {
		case len(b) == 0:
		case one == nil:
			one = b
		default:
			if !joined {
				in.out, joined = append(in.out[:0], one...), true
			}
			in.out = append(in.out, b...)
			one = in.out
		}
	}
	if len(one) == 0 {
		return 0, nil
	}
	n, err := w.Write(one)
	if cap(in.out) > 64<<10 {
		in.out = nil // keep no large buffer for the rest of the run
	}
	return n, err
}

func fdPread(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdRead|RightFdSeek, true)
	if errno != 0 {
		return errno
	}
	bufs, errno := in.iovecs(mod, uint32(s[1]), uint32(s[2]))
	if errno != 0 {
		return errno
	}
	off := s[3]
	if off > maxInt64 {
		return ErrnoInval
	}
	n, err := retry(func() (int, error) { return unix.Preadv(e.hostFd, bufs, int64(off)) })
	if err != nil {
		return toErrno(err)
	}
	return putU32(mod, uint32(s[4]), uint32(n))
}

// fdPwrite writes at the offset given whatever the fd's append flag: Linux
// pwrite(2) appends on an O_APPEND file (unlike POSIX and WASI), so the
// flag is lifted on the host file for the call. The guest is the only user
// of its open file description, so nothing else sees the change.
func fdPwrite(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdWrite|RightFdSeek, true)
	if errno != 0 {
		return errno
	}
	bufs, errno := in.iovecs(mod, uint32(s[1]), uint32(s[2]))
	if errno != 0 {
		return errno
	}
	off := s[3]
	if off > maxInt64 {
		return ErrnoInval
	}
	if e.flags&fdflagAppend != 0 {
		fl, err := unix.FcntlInt(uintptr(e.hostFd), unix.F_GETFL, 0)
		if err != nil {
			return toErrno(err)
		}
		if _, err := unix.FcntlInt(uintptr(e.hostFd), unix.F_SETFL, fl&^unix.O_APPEND); err != nil {
			return toErrno(err)
		}
		defer unix.FcntlInt(uintptr(e.hostFd), unix.F_SETFL, fl)
	}
	n, err := retry(func() (int, error) { return unix.Pwritev(e.hostFd, bufs, int64(off)) })
	if err != nil {
		return toErrno(err)
	}
	return putU32(mod, uint32(s[4]), uint32(n))
}

func fdSeek(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	off, whence := int64(s[1]), uint32(s[2])
	need := RightFdSeek
	if whence == whenceCur && off == 0 {
		need = RightFdTell
	}
	e, errno := in.getFile(uint32(s[0]), 0, true)
	if errno != 0 {
		return errno
	}
	if e.base&need == 0 && e.base&RightFdSeek == 0 {
		return ErrnoNotcapable
	}
	var w int
	switch whence {
	case whenceSet:
		w = unix.SEEK_SET
	case whenceCur:
		w = unix.SEEK_CUR
	case whenceEnd:
		w = unix.SEEK_END
	default:
		return ErrnoInval
	}
	pos, err := unix.Seek(e.hostFd, off, w)
	if err != nil {
		return toErrno(err)
	}
	return putU64(mod, uint32(s[3]), uint64(pos))
}

// fdSeekUnstable is fd_seek of snapshot 0, whose whence values are
// ordered cur, end, set (preview 1: set, cur, end).
func fdSeekUnstable(in *Instance, ctx context.Context, mod api.Module, s []uint64) Errno {
	switch uint32(s[2]) {
	case 0:
		s[2] = whenceCur
	case 1:
		s[2] = whenceEnd
	case 2:
		s[2] = whenceSet
	default:
		return ErrnoInval
	}
	return fdSeek(in, ctx, mod, s)
}

func fdTell(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdTell, true)
	if errno != 0 {
		return errno
	}
	pos, err := unix.Seek(e.hostFd, 0, unix.SEEK_CUR)
	if err != nil {
		return toErrno(err)
	}
	return putU64(mod, uint32(s[1]), uint64(pos))
}

func fdClose(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.get(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	in.fds[uint32(s[0])] = nil
	in.closeEntry(e)
	return 0
}

// fdRenumber moves fd from over fd to, closing what to held: any open fd
// over any other, a preopen or stdio included. to must be open (EBADF
// otherwise): the witx offers no dup2() to arbitrary numbers.
func fdRenumber(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	from, to := uint32(s[0]), uint32(s[1])
	e, errno := in.get(from)
	if errno != 0 {
		return errno
	}
	old, errno := in.get(to)
	if errno != 0 {
		return errno
	}
	if from == to {
		return 0
	}
	in.closeEntry(old)
	in.fds[to] = e
	in.fds[from] = nil
	return 0
}

func fdSync(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	return in.sync(uint32(s[0]), RightFdSync, unix.Fsync)
}

func fdDatasync(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	return in.sync(uint32(s[0]), RightFdDatasync, unix.Fdatasync)
}

func (in *Instance) sync(fd uint32, right uint64, f func(int) error) Errno {
	e, errno := in.getRights(fd, right)
	if errno != 0 {
		return errno
	}
	switch e.kind {
	case kindFile:
		return toErrno(f(e.hostFd))
	case kindDir:
		rfd, errno := e.dirReadFd()
		if errno != 0 {
			return errno
		}
		return toErrno(f(rfd))
	}
	return ErrnoInval // stdio, as fsync(2) of a pipe or terminal
}

func fdFdstatGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.get(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	var b [sizeFdstat]byte
	b[0] = e.filetype
	binary.LittleEndian.PutUint16(b[2:], e.flags)
	binary.LittleEndian.PutUint64(b[8:], e.base)
	binary.LittleEndian.PutUint64(b[16:], e.inh)
	if !mod.Memory().Write(uint32(s[1]), b[:]) {
		return ErrnoFault
	}
	return 0
}

// fdFdstatSetFlags sets append and nonblock; the synchronised-I/O flags
// cannot be changed on an open Linux file (fcntl ignores them), so asking
// for a change of those is ENOTSUP.
func fdFdstatSetFlags(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.getRights(uint32(s[0]), RightFdFdstatSetFlags)
	if errno != 0 {
		return errno
	}
	flags := uint16(s[1])
	if uint32(s[1])&^fdflagsAll != 0 {
		return ErrnoInval
	}
	const syncFlags = fdflagDsync | fdflagRsync | fdflagSync
	if flags&syncFlags != e.flags&syncFlags {
		return ErrnoNotsup
	}
	if e.kind == kindFile {
		fl, err := unix.FcntlInt(uintptr(e.hostFd), unix.F_GETFL, 0)
		if err != nil {
			return toErrno(err)
		}
		fl &^= unix.O_APPEND | unix.O_NONBLOCK
		if flags&fdflagAppend != 0 {
			fl |= unix.O_APPEND
		}
		if flags&fdflagNonblock != 0 || e.hostNonblock {
			fl |= unix.O_NONBLOCK
		}
		if _, err := unix.FcntlInt(uintptr(e.hostFd), unix.F_SETFL, fl); err != nil {
			return toErrno(err)
		}
	}
	e.flags = flags
	return 0
}

// fdFdstatSetRights narrows an fd's rights; asking for a right it does
// not hold is ENOTCAPABLE.
func fdFdstatSetRights(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.get(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	base, inh := s[1], s[2]
	if base&^e.base != 0 || inh&^e.inh != 0 {
		return ErrnoNotcapable
	}
	e.base, e.inh = base, inh
	return 0
}

// putFilestat writes a filestat of st at ptr (nil: a character device),
// in preview 1's layout or, with unstable, in snapshot 0's (nlink is a
// u32 there, and the struct 56 bytes long instead of 64).
func putFilestat(mod api.Module, ptr uint32, st *unix.Stat_t, unstable bool) Errno {
	var b [sizeFilestat]byte
	n := sizeFilestat
	b[16] = FiletypeCharacterDevice
	if st != nil {
		le := binary.LittleEndian
		le.PutUint64(b[0:], st.Dev)
		le.PutUint64(b[8:], st.Ino)
		b[16] = filetypeOf(st.Mode)
		rest := b[24:]
		if unstable {
			le.PutUint32(b[20:], uint32(st.Nlink))
		} else {
			le.PutUint64(b[24:], uint64(st.Nlink))
			rest = b[32:]
		}
		le.PutUint64(rest[0:], uint64(st.Size))
		le.PutUint64(rest[8:], uint64(st.Atim.Nano()))
		le.PutUint64(rest[16:], uint64(st.Mtim.Nano()))
		le.PutUint64(rest[24:], uint64(st.Ctim.Nano()))
	}
	if unstable {
		n = sizeFilestatUnstable
	}
	if !mod.Memory().Write(ptr, b[:n]) {
		return ErrnoFault
	}
	return 0
}

func fdFilestatGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return in.fdFilestatGet(mod, s, false)
}

func fdFilestatGetUnstable(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return in.fdFilestatGet(mod, s, true)
}

func (in *Instance) fdFilestatGet(mod api.Module, s []uint64, unstable bool) Errno {
	e, errno := in.getRights(uint32(s[0]), RightFdFilestatGet)
	if errno != 0 {
		return errno
	}
	var st unix.Stat_t
	switch e.kind {
	case kindFile:
		if err := unix.Fstat(e.hostFd, &st); err != nil {
			return toErrno(err)
		}
	case kindDir:
		if err := unix.Fstat(e.root.Fd(), &st); err != nil {
			return toErrno(err)
		}
	default:
		// stdio: a character device with nothing more to say.
		return putFilestat(mod, uint32(s[1]), nil, unstable)
	}
	return putFilestat(mod, uint32(s[1]), &st, unstable)
}

func fdFilestatSetSize(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdFilestatSetSize, false)
	if errno != 0 {
		return errno
	}
	if s[1] > maxInt64 {
		return ErrnoInval
	}
	if e.readOnly {
		return ErrnoRofs
	}
	_, err := retry(func() (int, error) { return 0, unix.Ftruncate(e.hostFd, int64(s[1])) })
	return toErrno(err)
}

// timespecs turns fd_filestat_set_times' arguments into utimensat's.
func timespecs(atim, mtim uint64, fst uint32) ([2]unix.Timespec, Errno) {
	var ts [2]unix.Timespec
	if fst&^fstAll != 0 || fst&(fstAtim|fstAtimNow) == fstAtim|fstAtimNow || fst&(fstMtim|fstMtimNow) == fstMtim|fstMtimNow {
		return ts, ErrnoInval
	}
	set := func(t uint64, given, now bool) unix.Timespec {
		switch {
		case now:
			return unix.Timespec{Nsec: unix.UTIME_NOW}
		case given:
			return unix.NsecToTimespec(int64(t))
		}
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	ts[0] = set(atim, fst&fstAtim != 0, fst&fstAtimNow != 0)
	ts[1] = set(mtim, fst&fstMtim != 0, fst&fstMtimNow != 0)
	return ts, 0
}

func fdFilestatSetTimes(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.getRights(uint32(s[0]), RightFdFilestatSetTimes)
	if errno != 0 {
		return errno
	}
	ts, errno := timespecs(s[1], s[2], uint32(s[3]))
	if errno != 0 {
		return errno
	}
	if e.readOnly {
		return ErrnoRofs
	}
	switch e.kind {
	case kindFile:
		// futimens(2): utimensat with a NULL path acts on the fd.
		_, _, en := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(e.hostFd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if en != 0 {
			return toErrno(en)
		}
		return 0
	case kindDir:
		return toErrno(e.root.Chtimes(".", ts))
	}
	return ErrnoBadf
}

// fdAdvise: WASI's advice values differ from Linux's in order.
func fdAdvise(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdAdvise, true)
	if errno != 0 {
		return errno
	}
	off, n, advice := s[1], s[2], uint32(s[3])
	if advice > adviceNoreuse || off > maxInt64 || n > maxInt64 {
		return ErrnoInval
	}
	linux := [...]int{unix.FADV_NORMAL, unix.FADV_SEQUENTIAL, unix.FADV_RANDOM, unix.FADV_WILLNEED, unix.FADV_DONTNEED, unix.FADV_NOREUSE}[advice]
	return toErrno(unix.Fadvise(e.hostFd, int64(off), int64(n), linux))
}

// fdAllocate is posix_fallocate: where the file system cannot reserve
// space, the file is at least extended to offset+len.
func fdAllocate(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	e, errno := in.getFile(uint32(s[0]), RightFdAllocate, true)
	if errno != 0 {
		return errno
	}
	off, n := s[1], s[2]
	if n == 0 || off > maxInt64 || n > maxInt64 {
		return ErrnoInval
	}
	if off+n > maxInt64 {
		return ErrnoFbig
	}
	if e.readOnly {
		return ErrnoRofs
	}
	_, err := retry(func() (int, error) { return 0, unix.Fallocate(e.hostFd, 0, int64(off), int64(n)) })
	if err != unix.EOPNOTSUPP {
		return toErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(e.hostFd, &st); err != nil {
		return toErrno(err)
	}
	if uint64(st.Size) < off+n {
		return toErrno(unix.Ftruncate(e.hostFd, int64(off+n)))
	}
	return 0
}

func fdPrestatGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getUnopened(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	if e.preopen == "" {
		return ErrnoBadf
	}
	if errno := putU32(mod, uint32(s[1]), preopentypeDir); errno != 0 {
		return errno
	}
	return putU32(mod, uint32(s[1])+4, uint32(len(e.preopen)))
}

func fdPrestatDirName(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getUnopened(uint32(s[0]))
	if errno != 0 {
		return errno
	}
	if e.preopen == "" {
		return ErrnoBadf
	}
	if uint32(s[2]) < uint32(len(e.preopen)) {
		return ErrnoNametoolong
	}
	if !mod.Memory().WriteString(uint32(s[1]), e.preopen) {
		return ErrnoFault
	}
	return 0
}

// dirent is one directory entry as fd_readdir serves it.
type dirent struct {
	ino  uint64
	typ  uint8
	name string
}

// listDir reads the whole directory from its start.
func (e *fdEntry) listDir() Errno {
	fd, errno := e.dirReadFd()
	if errno != 0 {
		return errno
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		return toErrno(err)
	}
	e.dirents = e.dirents[:0]
	buf := make([]byte, 8192)
	for {
		n, err := retry(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return toErrno(err)
		}
		if n <= 0 {
			return 0
		}
		for b := buf[:n]; len(b) >= 19; {
			// linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				return ErrnoIo
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			d := dirent{ino: binary.LittleEndian.Uint64(b), typ: filetypeOfDirent(b[18]), name: string(name)}
			if b[18] == unix.DT_UNKNOWN {
				// Some file systems leave the type out: ask for it, by
				// this one name in this directory, never following it.
				var st unix.Stat_t
				if unix.Fstatat(fd, d.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
					d.typ = filetypeOf(st.Mode)
				}
			}
			e.dirents = append(e.dirents, d)
			b = b[reclen:]
		}
	}
}

// fdReaddir fills buf with entries from cookie on (cookie n is the n-th
// entry; d_next the next one's). A listing is read when the guest starts
// over at cookie 0 and served from memory for later cookies, so entries
// neither repeat nor go missing while the guest walks. The last entry is
// cut short when it does not fit: a buffer filled to the last byte tells
// the guest to ask again with a larger one.
func fdReaddir(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	e, errno := in.getDir(uint32(s[0]), RightFdReaddir)
	if errno != 0 {
		return errno
	}
	buf, size, cookie := uint32(s[1]), uint32(s[2]), s[3]
	out, errno := read(mod, buf, size)
	if errno != 0 {
		return errno
	}
	if cookie == 0 || e.dirents == nil {
		if errno := e.listDir(); errno != 0 {
			return errno
		}
	}
	used := 0
	for i := cookie; i < uint64(len(e.dirents)) && used < len(out); i++ {
		d := e.dirents[i]
		var h [sizeDirent]byte
		binary.LittleEndian.PutUint64(h[0:], i+1)
		binary.LittleEndian.PutUint64(h[8:], d.ino)
		binary.LittleEndian.PutUint32(h[16:], uint32(len(d.name)))
		h[20] = d.typ
		used += copy(out[used:], h[:])
		used += copy(out[used:], d.name)
	}
	return putU32(mod, uint32(s[4]), uint32(used))
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
