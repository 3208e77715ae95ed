// Package atomicfile replaces files so that a reader, or a process restarted
// after a crash, sees either the old content or the new one, never a mix or
// a truncated file: the persisted-state rule of the project.
package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// seq numbers the temporary files of this process: with the pid in the name
// they are unique without random names (O_EXCL still guards against a
// leftover of an earlier process that had the same pid).
var seq atomic.Uint64

// pid is this process's pid for temporary names, read once (os.Getpid is a
// system call each time).
var pid = strconv.Itoa(os.Getpid())

// umask is the process's file mode creation mask, read once at start-up.
// Only its owner bits are relied on (see needChmod), which no sane process
// sets later.
var umask = func() os.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777 // unknown: always chmod
	}
	_, rest, ok := bytes.Cut(b, []byte("\nUmask:\t"))
	if !ok {
		return 0o777
	}
	line, _, _ := bytes.Cut(rest, []byte("\n"))
	m, err := strconv.ParseUint(string(line), 8, 32)
	if err != nil {
		return 0o777
	}
	return os.FileMode(m)
}()

// WriteFile writes data to a temporary file beside path, gives it mode perm,
// and renames it over path. With durable set, the file and then its
// directory are synced, so the new content survives a power loss as well as
// a crash; state kept on tmpfs (/run) has no use for that and skips it.
// On error path is unchanged and no temporary file is left.
//
// It is on the hot path of every sandbox and task (records are rewritten
// at each step), so it makes the system calls itself: the temporary file is
// created with its final mode (no chmod for owner-only modes, see
// needChmod),
// written with one write and closed without registering it with Go's
// poller, and renamed with renameat(2) directly (os.Rename first stats the
// target to refuse a directory, which renameat refuses as well).
func WriteFile(path string, data []byte, perm os.FileMode, durable bool) error {
	dir, base := filepath.Split(path) // dir ends in "/", or is "" for the working directory
	var (
		tmp string
		fd  int
		err error
	)
	for range 8 {
		tmp = dir + ".tmp-" + base + "-" + pid + "-" + strconv.FormatUint(seq.Add(1), 36)
		fd, err = unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "create", Path: tmp, Err: err}
	}
	fail := func(op string, err error) error {
		if fd >= 0 {
			unix.Close(fd)
		}
		unix.Unlink(tmp)
		return &os.PathError{Op: op, Path: tmp, Err: err}
	}
	if err := writeAll(fd, data); err != nil {
		return fail("write", err)
	}
	if needChmod(perm) {
		if err := unix.Fchmod(fd, uint32(perm.Perm())); err != nil {
			return fail("chmod", err)
		}
	}
	if durable {
		if err := unix.Fsync(fd); err != nil {
			return fail("sync", err)
		}
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return fail("close", err)
	}
	if err := unix.Rename(tmp, path); err != nil {
		unix.Unlink(tmp)
		return &os.LinkError{Op: "rename", Old: tmp, New: path, Err: err}
	}
	if durable {
		if dir == "" {
			dir = "."
		}
		if d, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			unix.Fsync(d)
			unix.Close(d)
		}
	}
	return nil
}

// needChmod reports whether a file created with perm may have another mode
// because of the umask. Modes with group or other bits always get a chmod
// (the umask may change at any time, and usually clears those); owner-only
// modes (0600, the records' mode) skip it unless the umask clears owner
// bits.
func needChmod(perm os.FileMode) bool {
	return perm.Perm()&^0o700 != 0 || umask&0o700&perm.Perm() != 0
}

// writeAll writes data to fd, retrying short writes and EINTR.
func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}
