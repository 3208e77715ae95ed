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
