// Package unixsock creates the unix sockets kuasar-go serves on, with the
// file mode the security rules ask for (0600 or 0660, never world-writable)
// and without clobbering anything that is not a stale socket.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Listen listens on a unix socket at path and sets its mode. A socket left
// at path by an earlier run is replaced; any other kind of file there is an
// ErrAlreadyExists error naming the path, so a mistyped path never deletes a
// user's file. The parent directory must exist.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	if mode&0o007 != 0 {
		return nil, fmt.Errorf("socket mode %#o for %s gives other users access: use 0600 or 0660: %w", mode, path, errdefs.ErrInvalidArgument)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another path: %w", path, errdefs.ErrAlreadyExists)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// listenBacklog is the listen(2) backlog of ListenFD's sockets (the kernel
// caps it at net.core.somaxconn, as it does Go's own listeners').
const listenBacklog = 4096

// ListenFD is Listen for a caller that polls the socket itself: it returns
// the listening socket's descriptor (non-blocking, close-on-exec), which
// the caller owns and must close, and removes the file, on every path
// after a successful return. It makes the same checks as Listen with
// fewer system calls, which matters where a socket is created per
// sandbox: socket, bind, chmod and listen, and only when the path is
// taken a look at what is there (a stale socket is replaced, anything
// else refused). The mode is set before listen(2), so no client ever
// connects to the socket with another mode. An error from bind(2) is
// returned wrapped, so a missing parent directory is fs.ErrNotExist.
func ListenFD(path string, mode os.FileMode) (int, error) {
	if mode&0o007 != 0 {
		return -1, fmt.Errorf("socket mode %#o for %s gives other users access: use 0600 or 0660: %w", mode, path, errdefs.ErrInvalidArgument)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket for %s: %w", path, err)
	}
	sa := &unix.SockaddrUnix{Name: path}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) {
		var st unix.Stat_t
		if lerr := unix.Lstat(path, &st); lerr == nil && st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			unix.Close(fd)
			return -1, fmt.Errorf("%s exists and is not a socket: remove it or choose another path: %w", path, errdefs.ErrAlreadyExists)
		}
		// A socket left by an earlier run: replaced.
		if uerr := unix.Unlink(path); uerr != nil && !errors.Is(uerr, unix.ENOENT) {
			unix.Close(fd)
			return -1, fmt.Errorf("remove stale socket %s: %w", path, uerr)
		}
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Chmod(path, uint32(mode.Perm())); err != nil {
		unix.Close(fd)
		unix.Unlink(path)
		return -1, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		unix.Close(fd)
		unix.Unlink(path)
		return -1, fmt.Errorf("listen on %s: %w", path, err)
	}
	return fd, nil
}
