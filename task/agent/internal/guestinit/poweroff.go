package guestinit

import (
	"context"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Poweroff syncs the file systems and powers the VM off with
// reboot(LINUX_REBOOT_CMD_POWER_OFF). With QEMU started with -no-reboot this
// ends the QEMU process. It only returns if the syscall fails (not PID 1 or
// missing CAP_SYS_BOOT).
func Poweroff(ctx context.Context) error {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	log.G(ctx).WithError(err).Error("power off failed")
	return err
}
