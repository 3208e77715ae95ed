package vmbackend

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// makeSharedMount turns the sandbox's shared directory into a mount point
// of its own with shared propagation. A confined VMM (and virtiofsd's
// namespace sandbox) sees the directory through a slave copy in its own
// mount namespace, so the container rootfs mounts the forwarder makes
// below it after the VMM started still reach the VMM, while nothing the
// VMM's namespace does reaches the host. Shutdown's unmountUnder removes
// the mount with everything below it. dir must have been created by the
// caller for this sandbox alone.
func makeSharedMount(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the shared directory %s onto itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("make the shared directory %s a shared mount: %w", dir, err)
	}
	return nil
}
