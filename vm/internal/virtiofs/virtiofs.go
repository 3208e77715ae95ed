// Package virtiofs is how the vhost-user drivers (Cloud Hypervisor,
// StratoVirt) export a sandbox's shared directory over virtio-fs: which
// share modes they accept, when virtio-fs is in use, and starting
// virtiofsd for it.
package virtiofs

import (
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// Check validates spec for a driver that supports virtio-fs (the
// default) and block: its configuration (vm.Config.Validate), then the
// share mode (virtio-fs with a shared directory needs virtiofsd).
// section is the driver's [hypervisor.<section>], name its display name,
// both for the errors.
func Check(spec vm.Spec, section, name string) error {
	if err := spec.Config.Validate(section); err != nil {
		return err
	}
	switch spec.Config.RootfsMode {
	case "", vm.ShareVirtioFS:
		if spec.SharedDir != "" && spec.Config.VirtioFSD == "" {
			return fmt.Errorf("rootfs_mode virtiofs needs virtiofsd: set \"virtiofsd\" in [hypervisor.%s]: %w", section, errdefs.ErrFailedPrecondition)
		}
	case vm.ShareBlock:
	default:
		return fmt.Errorf("rootfs_mode %q in [hypervisor.%s]: %s has no 9p, use virtiofs or block: %w", spec.Config.RootfsMode, section, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Used reports whether spec's shared directory goes over virtio-fs.
func Used(spec vm.Spec) bool {
	return spec.SharedDir != "" && (spec.Config.RootfsMode == "" || spec.Config.RootfsMode == vm.ShareVirtioFS)
}

// Start starts spec's virtiofsd serving its shared directory on socket,
// its output appended to logPath, when spec uses virtio-fs (see Used);
// otherwise it returns a nil process. section names the driver's
// configuration section for a start failure.
//
// virtiofsd runs with no cache and confined by its own sandbox
// (--sandbox=namespace: new mount, pid and network namespaces with the
// shared directory pivoted to its root; container rootfs mounts the
// host makes below it later still reach it, the directory being a shared
// mount, see vm/vmbackend) and its seccomp filter killing on a system call
// outside its list (--seccomp=kill).
func Start(spec vm.Spec, section, socket, logPath string) (*vmm.Process, error) {
	if !Used(spec) {
		return nil, nil
	}
	return vmm.StartConfigured(section, "virtiofsd", spec.Config.VirtioFSD, []string{
		"--socket-path=" + socket, "--shared-dir=" + spec.SharedDir, "--cache=never", "--sandbox=namespace", "--seccomp=kill",
	}, logPath)
}
