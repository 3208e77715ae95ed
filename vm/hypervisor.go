// Package vm holds what every micro-VM hypervisor driver shares: the
// Hypervisor interface the VM backend drives, the per-hypervisor
// configuration, and how a pod's resources become VM sizes.
//
// The drivers live in sub-packages (vm/internal/qemu, vm/internal/cloudhypervisor,
// vm/internal/stratovirt); the backend.Backend that boots sandboxes in them is
// vm/vmbackend, and the guest kernel + initramfs builder is vm/guest.
package vm

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containerd/errdefs"
)

// Names of the hypervisors the VM backend knows.
const (
	// QEMU is driven through its command line and QMP (vm/internal/qemu).
	QEMU = "qemu"
	// CloudHypervisor is driven through its REST API (vm/internal/cloudhypervisor).
	CloudHypervisor = "cloud-hypervisor"
	// StratoVirt is driven through its command line and QMP dialect (vm/internal/stratovirt).
	StratoVirt = "stratovirt"
)

// Share modes: how the sandbox's shared directory (container rootfs,
// bundles) reaches the guest.
const (
	// Share9P exports the shared directory with virtio-9p (tag "kuasar").
	Share9P = "9p"
	// ShareVirtioFS exports it with virtio-fs (needs virtiofsd).
	ShareVirtioFS = "virtiofs"
	// ShareBlock hands a container's rootfs over as a read-only erofs
	// image on virtio-blk (QEMU: `kuasar run` only, where the container is
	// known before boot); bundles still travel through the 9p share.
	ShareBlock = "block"
)

// ShareTag is the mount tag of the shared directory in the guest.
const ShareTag = "kuasar"

// GuestSharedDir is where the guest agent mounts the shared directory.
const GuestSharedDir = "/run/kuasar/shared"

// AgentVsockPort is the AF_VSOCK port the guest agent listens on when the
// channel is vsock (Cloud Hypervisor, StratoVirt).
const AgentVsockPort = 1024

// AgentSerialName is the virtio-serial port name the guest agent serves on.
const AgentSerialName = "kuasar.agent"

// Config is one [hypervisor.NAME] section of the sandboxer configuration
// (the [hypervisor] section itself is vm/vmbackend.Config). Machine, Accel,
// KernelParams and Debug default sensibly when left out.
type Config struct {
	// Path is the hypervisor binary.
	Path string `toml:"path"`
	// Kernel is the guest kernel (an ELF vmlinux with a PVH note for
	// microvm, a bzImage for q35).
	Kernel string `toml:"kernel"`
	// Initramfs is the guest initramfs whose /init is the kuasar-task agent.
	Initramfs string `toml:"initramfs"`
	// VCPUs is the default vCPU count (pods with a CPU limit get more).
	VCPUs uint32 `toml:"vcpus"`
	// MemoryMB is the default guest memory in MiB (pods with a memory limit
	// get their limit plus the guest's own overhead).
	MemoryMB uint64 `toml:"memory_mb"`
	// Machine is the machine type: "microvm" (default) or "q35".
	Machine string `toml:"machine"`
	// MachineOptions are appended to the machine type (QEMU "-M
	// microvm,<options>"), e.g. "acpi=off" for a kernel built without ACPI.
	MachineOptions string `toml:"machine_options"`
	// Accel is "auto" (default: KVM when it works, else TCG), "kvm" or "tcg".
	Accel string `toml:"accel"`
	// RootfsMode is how the shared directory reaches the guest: "9p",
	// "virtiofs" or "block".
	RootfsMode string `toml:"rootfs_mode"`
	// VirtioFSD is the virtiofsd binary, needed when RootfsMode is
	// "virtiofs" (Cloud Hypervisor, StratoVirt).
	VirtioFSD string `toml:"virtiofsd"`
	// KernelParams are appended to the guest kernel command line.
	KernelParams []string `toml:"kernel_params"`
	// ExtraArgs are appended to the hypervisor's command line.
	ExtraArgs []string `toml:"extra_args"`
	// Debug makes the guest agent log to the console (kuasar.debug=1).
	Debug bool `toml:"debug"`
	// Template is "auto" (default: QEMU and Cloud Hypervisor sandboxes of
	// the default sizes are restored from a VM template) or "off" (always
	// boot cold); see
	// docs/vm.md for what clones of one template share.
	Template string `toml:"template"`
	// TemplatePool is how many restored clones of each template the VM
	// backend keeps ready ([hypervisor.qemu] template_pool; 0: none), so
	// a sandbox start adopts a running guest instead of restoring one.
	// Each idle clone holds about 58 MiB (PSS); see docs/vm.md.
	TemplatePool int `toml:"template_pool"`
	// VMMUIDBase and VMMUIDCount are the host uids (and gids) confined
	// VMMs run under, one per running VMM (DefaultVMMUIDBase and
	// DefaultVMMUIDCount when 0). Reserve the range for kuasar: no other
	// user or file on the host should own ids in it.
	VMMUIDBase  uint32 `toml:"vmm_uid_base"`
	VMMUIDCount uint32 `toml:"vmm_uid_count"`
}

// Defaults of the VMM uid range (see Config.VMMUIDBase): far above the
// subordinate id ranges (/etc/subuid) distributions hand out from 100000.
const (
	DefaultVMMUIDBase  = 2_000_000_000
	DefaultVMMUIDCount = 65536
)

// VMMUIDs returns the configured VMM uid range, defaults filled in.
func (c Config) VMMUIDs() (base, count uint32) {
	base, count = c.VMMUIDBase, c.VMMUIDCount
	if base == 0 {
		base = DefaultVMMUIDBase
	}
	if count == 0 {
		count = DefaultVMMUIDCount
	}
	return base, count
}

// Validate checks that the files the config names exist, and says which
// key of section [hypervisor.<name>] to set when one does not.
func (c Config) Validate(name string) error {
	check := func(key, path, what string) error {
		if path == "" {
			return fmt.Errorf("%s is not configured: set %q in [hypervisor.%s]: %w", what, key, name, errdefs.ErrFailedPrecondition)
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%s %s not usable (%w): set %q in [hypervisor.%s] (run `make guest` for the kernel and initramfs): %w",
				what, path, err, key, name, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if err := check("path", c.Path, "hypervisor binary"); err != nil {
		return err
	}
	if err := check("kernel", c.Kernel, "guest kernel"); err != nil {
		return err
	}
	if err := check("initramfs", c.Initramfs, "guest initramfs"); err != nil {
		return err
	}
	switch c.RootfsMode {
	case "", Share9P, ShareVirtioFS, ShareBlock:
	default:
		return fmt.Errorf("rootfs_mode %q in [hypervisor.%s]: use 9p, virtiofs or block: %w", c.RootfsMode, name, errdefs.ErrInvalidArgument)
	}
	switch c.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("accel %q in [hypervisor.%s]: use auto, kvm or tcg: %w", c.Accel, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Default sizes and the guest's own memory overhead.
const (
	// DefaultVCPUs is used when neither the config nor the pod sets one.
	DefaultVCPUs = 1
	// DefaultMemoryMB is used when neither the config nor the pod sets one.
	DefaultMemoryMB = 256
	// GuestOverheadMB is added to a pod's memory limit for the guest
	// kernel and agent.
	GuestOverheadMB = 128
	// MaxVCPUs caps the vCPUs a pod's CPU limit can ask for.
	MaxVCPUs = 32
)

// Resources are the sizes a pod asks for, zero when it sets none. The
// fields are those of sandboxer/backend.Resources, so a backend converts
// with vm.Resources(sb.Resources): this package depends on no sandboxer
// code.
type Resources struct {
	// MemoryLimitBytes caps the pod's memory; 0 means none.
	MemoryLimitBytes uint64
	// CPUQuota and CPUPeriod (microseconds) express a CPU limit; both 0
	// means none.
	CPUQuota  int64
	CPUPeriod uint64
}

// Sizes turns the config's defaults and a pod's resources into the VM's
// vCPU count and memory in MiB: the pod's CPU limit rounded up to whole
// vCPUs (at least the default), its memory limit plus GuestOverheadMB (at
// least the default).
func Sizes(c Config, r Resources) (vcpus uint32, memoryMB uint64) {
	vcpus, memoryMB = c.VCPUs, c.MemoryMB
	if vcpus == 0 {
		vcpus = DefaultVCPUs
	}
	if memoryMB == 0 {
		memoryMB = DefaultMemoryMB
	}
	if r.CPUQuota > 0 && r.CPUPeriod > 0 {
		n := uint32((uint64(r.CPUQuota) + r.CPUPeriod - 1) / r.CPUPeriod)
		if n > MaxVCPUs {
			n = MaxVCPUs
		}
		if n > vcpus {
			vcpus = n
		}
	}
	if r.MemoryLimitBytes > 0 {
		m := (r.MemoryLimitBytes+(1<<20)-1)>>20 + GuestOverheadMB
		if m > memoryMB {
			memoryMB = m
		}
	}
	return vcpus, memoryMB
}

// Spec is one VM to boot: the config plus what belongs to this sandbox.
type Spec struct {
	// ID is the sandbox ID (used for the VM's name).
	ID string
	// StateDir holds the VM's sockets and console log; it belongs to the
	// sandbox alone.
	StateDir string
	// SharedDir is the host directory exported to the guest with tag
	// ShareTag.
	SharedDir string
	// Config is the hypervisor section.
	Config Config
	// VCPUs and MemoryMB are the VM's sizes (see Sizes).
	VCPUs    uint32
	MemoryMB uint64
	// Disks are block devices attached at boot, in order: the guest sees
	// them as /dev/vda, /dev/vdb, ... (see GuestDiskPath).
	Disks []Disk
}

// Disk is a raw image file attached to the VM as a virtio-blk device.
type Disk struct {
	// ID names the device on the hypervisor's command line (letters,
	// digits, '-' and '_').
	ID string
	// Path is the image file on the host.
	Path string
	// ReadOnly attaches the image read-only.
	ReadOnly bool
}

// GuestDiskPath is the guest device node of the i-th disk of a Spec
// (virtio-blk devices are named in attach order: vda, vdb, ...).
func GuestDiskPath(i int) string {
	if i < 0 || i >= 26 {
		return ""
	}
	return "/dev/vd" + string(rune('a'+i))
}

// Capabilities say what a hypervisor driver can do, so the backend can
// pick a share mode and channel it supports.
type Capabilities struct {
	// ShareModes are the share modes the driver implements.
	ShareModes []string
	// Channel is the agent channel: "serial" or "vsock".
	Channel string
	// Hotplug reports whether devices can be added to a running VM.
	Hotplug bool
}

// Hypervisor is one VM driven by one hypervisor process.
type Hypervisor interface {
	// Start launches the VMM and boots the guest; it returns once the VMM
	// runs (not once the agent answers). A failed Start leaves no process
	// or socket behind.
	Start(ctx context.Context) error
	// Stop ends the VMM: a graceful quit, then SIGKILL after timeout. It
	// returns once the process is gone and is idempotent.
	Stop(ctx context.Context, timeout time.Duration) error
	// Wait blocks until the VMM process exits or ctx is done.
	Wait(ctx context.Context) error
	// Pid is the VMM's process id (0 before Start).
	Pid() int
	// DialAgent returns a connection to the guest agent's channel.
	DialAgent(ctx context.Context) (net.Conn, error)
	// ConsoleLog is the file the guest console is written to.
	ConsoleLog() string
	// Capabilities reports what the driver supports.
	Capabilities() Capabilities
}
