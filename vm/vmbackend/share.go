package vmbackend

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// The sandbox's shared directory is exported to the guest (9p/virtiofs) and
// writable by it: a hostile guest kernel can put a symlink to any host path
// wherever the host is about to create a container's directory, its rootfs
// mount point or its config.json. Every host operation below the shared
// directory therefore goes through internal/fsroot: names are created with
// mkdirat/openat(O_EXCL|O_NOFOLLOW) on directory fds resolved inside the
// share, and mounts are made onto /proc/self/fd/N of the mount point's fd.

// makeShareDir creates <shared>/<id> and returns it as a Root. A leftover
// of an earlier failed create (or anything the guest put there) is cleaned
// up once and the directory created afresh.
func makeShareDir(ctx context.Context, shared, id string) (*fsroot.Root, error) {
	r, err := fsroot.Open(shared)
	if err != nil {
		return nil, fmt.Errorf("container %s: opening the sandbox's shared directory: %w: %w", id, err, errdefs.ErrFailedPrecondition)
	}
	defer r.Close()
	err = r.Mkdir(id, 0o755)
	if errors.Is(err, unix.EEXIST) {
		log.G(ctx).WithField("container", id).Warn("vm: removing a leftover container directory in the shared directory")
		if cerr := cleanupDir(filepath.Join(shared, id)); cerr != nil {
			return nil, fmt.Errorf("container %s: a leftover %s cannot be removed: %w", id, filepath.Join(shared, id), cerr)
		}
		err = r.Mkdir(id, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: creating its directory in the shared directory %s: %w", id, shared, err)
	}
	d, err := r.OpenRoot(id)
	if err != nil {
		return nil, fmt.Errorf("container %s: opening its directory in the shared directory %s: %w", id, shared, err)
	}
	return d, nil
}

// mountPoint creates the directory name in dir and returns an O_PATH fd of
// it, checked to be the directory just made and not a symlink.
func mountPoint(dir *fsroot.Root, name string) (int, error) {
	if err := dir.Mkdir(name, 0o755); err != nil {
		return -1, err
	}
	fd, err := dir.OpenPath(name, true)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return -1, fmt.Errorf("%s changed under us (not a directory any more): %w", name, errdefs.ErrFailedPrecondition)
	}
	return fd, nil
}

// writeNew creates name in dir (O_EXCL|O_NOFOLLOW: never through a link,
// never over an existing file) with data, mode 0600.
func writeNew(dir *fsroot.Root, name string, data []byte) error {
	f, err := dir.OpenFile(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// openBundleDir returns an O_PATH fd of the directory p: absolute as given
// (containerd's root.path), or relative, resolved inside the bundle.
func openBundleDir(bundle, p string) (int, error) {
	var fd int
	var err error
	if filepath.IsAbs(p) {
		fd, err = unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		var r *fsroot.Root
		if r, err = fsroot.Open(bundle); err != nil {
			return -1, err
		}
		defer r.Close()
		if fd, err = r.OpenPath(p, false); err == nil {
			var st unix.Stat_t
			if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
				err = unix.ENOTDIR
			}
			if err != nil {
				unix.Close(fd)
			}
		}
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// procFd names an open fd for mount(2): the kernel resolves it to the
// object itself.
func procFd(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }
