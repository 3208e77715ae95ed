package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// SandboxOption is the value of QEMU's -sandbox option: its seccomp filter
// on, with every group of system calls it can deny denied (obsolete ones,
// set*uid and friends, fork/exec, and scheduler/resource control).
const SandboxOption = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// JailDirName is the (empty) directory in the VM's state directory that
// the jail's root is mounted on, inside QEMU's own mount namespace only.
const JailDirName = "jail"

// refusedArgs are QEMU options extra_args may not carry: they would
// undo or fight the confinement the driver sets up.
var refusedArgs = map[string]string{
	"-sandbox":   "the driver always sets -sandbox " + SandboxOption,
	"-runas":     "the driver runs QEMU under a uid of its own (vmm_uid_base)",
	"-chroot":    "the driver runs QEMU in a mount namespace of its own",
	"-daemonize": "the driver watches QEMU as its child",
}

// checkExtraArgs refuses extra_args that would weaken the confinement.
func checkExtraArgs(args []string) error {
	for _, a := range args {
		if why, ok := refusedArgs[a]; ok {
			return fmt.Errorf("extra_args in [hypervisor.qemu] hold %s, which is not allowed (%s): remove it: %w", a, why, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// KeptCapabilities are the capabilities a confined QEMU keeps for a
// rootfs mode (numbers as in capabilities(7)).
//
//   - 9p: the guest's root writes the shared directory through QEMU
//     (security_model=none: QEMU's own credentials do the work), so QEMU
//     needs CAP_DAC_OVERRIDE (read and write files of any owner, as the
//     guest's root may), CAP_CHOWN (chown, and give new files the
//     guest's owner), CAP_FOWNER (chmod, utimes and xattrs on files it
//     does not own) and CAP_FSETID (keep set-group-ID bits on chmod).
//   - block: the rootfs is an image on virtio-blk, the 9p share is
//     exported read-only and only carries bundles the sandboxer writes as
//     root with mode 0600, so QEMU needs CAP_DAC_OVERRIDE to read them.
//
// Never kept: CAP_DAC_READ_SEARCH (its open_by_handle_at(2) opens any
// inode of a file system QEMU can see a mount of, past its mount
// namespace), CAP_MKNOD (a guest could create device nodes in the host
// directory), CAP_SETFCAP, CAP_SYS_ADMIN and everything else.
func KeptCapabilities(rootfsMode string) []uintptr {
	if rootfsMode == vm.ShareBlock {
		return []uintptr{unix.CAP_DAC_OVERRIDE}
	}
	return []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}
}

// hostLinkDirs are the top-level directories the dynamic loader may go
// through; on merged-/usr systems they are symlinks into /usr.
var hostLinkDirs = []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// Jail describes the confinement of this VM's QEMU for accel (without
// its uid, see Start): the files it needs (QEMU's own binary and
// libraries under /usr, the guest kernel and initramfs, its state
// directory, the shared directory — read-only in block mode — and the
// disk images) and /dev/kvm when accel is kvm.
func (v *VM) Jail(accel string) *vmm.Jail {
	c := v.spec.Config
	j := &vmm.Jail{
		Root:     v.path(JailDirName),
		Symlinks: map[string]string{},
		Caps:     KeptCapabilities(c.RootfsMode),
		Proc:     true,
		Binds: []vmm.Bind{
			{Path: "/usr"},
			{Path: realPath(c.Path)}, // inside /usr normally, then already there
			{Path: c.Kernel},
			{Path: c.Initramfs},
			{Path: v.spec.StateDir, Writable: true},
		},
	}
	for _, d := range hostLinkDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if t, err := os.Readlink(d); err == nil {
				j.Symlinks[d] = t
			}
		case fi.IsDir():
			j.Binds = append(j.Binds, vmm.Bind{Path: d})
		}
	}
	if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
		j.Binds = append(j.Binds, vmm.Bind{Path: "/etc/ld.so.cache"})
	}
	if v.spec.SharedDir != "" {
		j.Binds = append(j.Binds, vmm.Bind{Path: v.spec.SharedDir, Writable: c.RootfsMode != vm.ShareBlock, Recursive: true})
	}
	for _, d := range v.spec.Disks {
		j.Binds = append(j.Binds, vmm.Bind{Path: d.Path, Writable: !d.ReadOnly})
	}
	if v.tpl != nil && v.tpl.memFile == nil {
		// Building a template: QEMU writes the guest's RAM into the
		// memory file. A clone gets no path to it, only the sealed
		// memfd it inherits (see template.go).
		j.Binds = append(j.Binds, vmm.Bind{Path: v.tpl.mem, Writable: true})
	}
	if accel == AccelKVM {
		j.Devices = append(j.Devices, "/dev/kvm")
	}
	return j
}

// realPath is p with its symlinks resolved (p itself when that fails):
// QEMU is executed by the path configured, which may go through a
// merged-/usr symlink such as /bin, recreated in the jail.
func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

var warnUnconfined sync.Once

// launch starts QEMU with args: confined (see Jail) under a leased uid
// when this process can build the jail (it runs as root), otherwise as
// a plain child with only QEMU's own seccomp sandbox.
func (v *VM) launch(ctx context.Context, accel string, args []string) (*vmm.Process, error) {
	c := v.spec.Config
	if !vmm.CanJail() {
		warnUnconfined.Do(func() {
			log.G(ctx).Warn("vm: not running as root: QEMU runs with the caller's credentials and its seccomp sandbox, without a mount namespace of its own")
		})
		return vmm.StartConfigured(vm.QEMU, "path", c.Path, args, v.path(VMMLogName), v.inherited()...)
	}
	base, count := c.VMMUIDs()
	uid, lease, err := vmm.LeaseUID(base, count)
	if err != nil {
		return nil, err
	}
	defer lease.Close() // QEMU holds its own copy
	j := v.Jail(accel)
	j.UID, j.GID, j.Lease, j.Files = uid, uid, lease, v.inherited()
	if err := os.Mkdir(j.Root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	// QEMU creates its QMP socket (0600, umask 077) and console log in
	// the state directory, which its gid may write (0770, owner root),
	// and connects to the agent socket the sandboxer listens on, which
	// is handed to its uid (0600): no other VMM can reach either.
	if err := os.Lchown(v.spec.StateDir, 0, int(uid)); err != nil {
		return nil, fmt.Errorf("hand %s to the VMM's gid %d: %w", v.spec.StateDir, uid, err)
	}
	if err := os.Chmod(v.spec.StateDir, 0o770); err != nil {
		return nil, err
	}
	if err := os.Lchown(v.path(AgentSocketName), int(uid), 0); err != nil {
		return nil, fmt.Errorf("hand the agent socket to the VMM's uid %d: %w", uid, err)
	}
	p, err := vmm.StartJailed(c.Path, args, v.path(VMMLogName), j)
	if err != nil {
		return nil, fmt.Errorf("%w (check \"path\" in [hypervisor.qemu])", err)
	}
	v.uid = uid
	log.G(ctx).WithField("sandbox", v.spec.ID).WithField("uid", uid).WithField("caps", j.Caps).Debug("vm: qemu confined")
	return p, nil
}

// inherited are the files QEMU inherits (see vmm.InheritedFD): a
// clone's sealed template memory.
func (v *VM) inherited() []*os.File {
	if v.tpl != nil && v.tpl.memFile != nil {
		return []*os.File{v.tpl.memFile}
	}
	return nil
}

// UID is the uid (and gid) the confined QEMU runs under, 0 when it runs
// unconfined or has not started.
func (v *VM) UID() uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.uid
}
