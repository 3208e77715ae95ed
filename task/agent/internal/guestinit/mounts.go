package guestinit

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

type baseMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool
}

var baseMounts = []baseMount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", true},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", true},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
}

// MountBase mounts the file systems PID 1 needs: proc, sysfs, devtmpfs,
// tmpfs on /run and /tmp, and, when the kernel supports them, devpts,
// /dev/shm and cgroup2. A target that is already mounted (EBUSY) is left
// as it is, so calling MountBase twice is harmless.
func MountBase(ctx context.Context) error {
	for _, m := range baseMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			if m.optional {
				continue
			}
			return fmt.Errorf("create mount point %s: %w", m.target, err)
		}
		err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
		switch {
		case err == nil, errors.Is(err, unix.EBUSY):
		case m.optional:
			log.G(ctx).WithError(err).WithField("target", m.target).Debug("optional mount skipped")
		default:
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// ShareMounts makes every mount of the agent's tree shared (MS_SHARED,
// recursively from /), so that a container set-up helper pre-forked into
// its own mount namespace (agent.WithZygote) still receives the mounts
// the agent makes later, such as the sandbox share. Helpers make their copy
// private before they mount anything, so nothing propagates back.
func ShareMounts() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make the guest mounts shared: %w", err)
	}
	return nil
}
