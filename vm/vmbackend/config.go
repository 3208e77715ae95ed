package vmbackend

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
)

// ConfigSection is the top-level table of kuasar-sandboxer's configuration
// this backend owns: [hypervisor].
const ConfigSection = "hypervisor"

// Config is the [hypervisor] section. The backend owns it: its keys,
// defaults and checks live here, and the sandboxer's configuration hands
// the section over undecoded (sandboxer/config.Section).
type Config struct {
	// Default names the hypervisor used when pod and image name none.
	Default string `toml:"default"`
	// QEMU is [hypervisor.qemu].
	QEMU vm.Config `toml:"qemu"`
	// CloudHypervisor is [hypervisor.cloud-hypervisor].
	CloudHypervisor vm.Config `toml:"cloud-hypervisor"`
	// StratoVirt is [hypervisor.stratovirt].
	StratoVirt vm.Config `toml:"stratovirt"`
}

// DefaultConfig returns the section's defaults, the values
// configs/config.toml ships.
func DefaultConfig() Config {
	base := vm.Config{
		Kernel:      "/var/lib/kuasar/vmlinux",
		Initramfs:   "/var/lib/kuasar/initramfs.img",
		VCPUs:       vm.DefaultVCPUs,
		MemoryMB:    vm.DefaultMemoryMB,
		RootfsMode:  vm.ShareVirtioFS,
		VirtioFSD:   "/usr/libexec/virtiofsd",
		ExtraArgs:   []string{},
		VMMUIDBase:  vm.DefaultVMMUIDBase,
		VMMUIDCount: vm.DefaultVMMUIDCount,
	}
	q, ch, sv := base, base, base
	q.Path, q.RootfsMode, q.Accel, q.KernelParams, q.Template = "/usr/bin/qemu-system-x86_64", vm.Share9P, "auto", []string{}, TemplateAuto
	q.TemplatePool = DefaultTemplatePool
	ch.Path, ch.VMMUIDBase, ch.VMMUIDCount, ch.Template = "/usr/bin/cloud-hypervisor", 0, 0, TemplateAuto
	sv.Path, sv.VMMUIDBase, sv.VMMUIDCount = "/usr/bin/stratovirt", 0, 0
	return Config{Default: vm.QEMU, QEMU: q, CloudHypervisor: ch, StratoVirt: sv}
}

// Get returns the settings of the hypervisor called name, or an
// ErrInvalidArgument error listing the names it knows.
func (c Config) Get(name string) (vm.Config, error) {
	switch name {
	case vm.QEMU:
		return c.QEMU, nil
	case vm.CloudHypervisor:
		return c.CloudHypervisor, nil
	case vm.StratoVirt:
		return c.StratoVirt, nil
	}
	return vm.Config{}, fmt.Errorf("unknown hypervisor %q: use qemu, cloud-hypervisor or stratovirt: %w", name, errdefs.ErrInvalidArgument)
}

// Options returns the New options the section sets: every hypervisor's
// settings and the default.
func (c Config) Options() []Option {
	return []Option{
		WithDefaultHypervisor(c.Default),
		WithHypervisor(vm.QEMU, c.QEMU),
		WithHypervisor(vm.CloudHypervisor, c.CloudHypervisor),
		WithHypervisor(vm.StratoVirt, c.StratoVirt),
	}
}

// Bounds of the [hypervisor.NAME] sizes. A guest kernel and the agent need
// MinMemoryMB to boot; MaxMemoryMB (1 TiB) is far above any micro-VM and
// catches a negative value TOML wrapped into a huge unsigned one.
const (
	// MinMemoryMB is the smallest memory_mb accepted.
	MinMemoryMB = 64
	// MaxMemoryMB is the largest memory_mb accepted.
	MaxMemoryMB = 1 << 20
)

// hypervisorCaps is what each hypervisor's driver reads of its section:
// the rootfs modes it implements (its Capabilities().ShareModes, checked by
// TestHypervisorCapsMatchDrivers) and whether it reads machine and accel.
var hypervisorCaps = map[string]struct {
	rootfsModes []string
	machine     bool // reads machine and machine_options
	accel       []string
}{
	vm.QEMU:            {rootfsModes: []string{vm.Share9P, vm.ShareBlock}, machine: true, accel: []string{"auto", "kvm", "tcg"}},
	vm.CloudHypervisor: {rootfsModes: []string{vm.ShareVirtioFS, vm.ShareBlock}, accel: []string{"auto", "kvm"}},
	vm.StratoVirt:      {rootfsModes: []string{vm.ShareVirtioFS, vm.ShareBlock}, accel: []string{"auto", "kvm"}},
}

// CheckHypervisor returns an ErrInvalidArgument error naming key (where
// the name was read, such as runtime_handlers.NAME.hypervisor) when name
// is not a hypervisor this backend drives.
func CheckHypervisor(key, name string) error {
	if _, ok := hypervisorCaps[name]; !ok {
		return fmt.Errorf("%s: %q is not a hypervisor: use qemu, cloud-hypervisor or stratovirt: %w", key, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Validate checks every key whose value decodes but cannot work and
// returns all the problems at once (errors.Join), each of kind
// ErrInvalidArgument, naming its key (hypervisor.NAME.KEY) and the fix.
// It checks values, not the host: whether the files exist is for Start
// (and `kuasar check`), so a host without QEMU still serves Wasm pods.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument))
	}
	if err := CheckHypervisor("hypervisor.default", c.Default); err != nil {
		errs = append(errs, err)
	}
	for _, name := range []string{vm.QEMU, vm.CloudHypervisor, vm.StratoVirt} {
		h, _ := c.Get(name)
		validateHypervisor(name, h, bad)
	}
	return errors.Join(errs...)
}

// validateHypervisor checks one [hypervisor.NAME] section.
func validateHypervisor(name string, h vm.Config, bad func(string, string, ...any)) {
	key := func(k string) string { return "hypervisor." + name + "." + k }
	caps := hypervisorCaps[name]
	for _, f := range []struct{ k, v string }{{"path", h.Path}, {"kernel", h.Kernel}, {"initramfs", h.Initramfs}, {"virtiofsd", h.VirtioFSD}} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			bad(key(f.k), "%q is not an absolute path: use one such as /usr/bin/qemu-system-x86_64 or /var/lib/kuasar/vmlinux", f.v)
		}
	}
	if h.VCPUs < 1 || h.VCPUs > vm.MaxVCPUs {
		bad(key("vcpus"), "%d is out of range: use 1 to %d", h.VCPUs, vm.MaxVCPUs)
	}
	if h.MemoryMB < MinMemoryMB || h.MemoryMB > MaxMemoryMB {
		bad(key("memory_mb"), "%d is out of range: use %d to %d (MiB; a negative value reads as a huge one)", h.MemoryMB, MinMemoryMB, MaxMemoryMB)
	}
	if h.RootfsMode != "" && !slices.Contains(caps.rootfsModes, h.RootfsMode) {
		bad(key("rootfs_mode"), "%q is not implemented by the %s driver: use %s", h.RootfsMode, name, strings.Join(caps.rootfsModes, " or "))
	}
	if h.RootfsMode == vm.ShareVirtioFS && h.VirtioFSD == "" {
		bad(key("virtiofsd"), "is empty, but rootfs_mode is \"virtiofs\": set the virtiofsd binary, such as /usr/libexec/virtiofsd")
	}
	if h.Accel != "" && !slices.Contains(caps.accel, h.Accel) {
		bad(key("accel"), "%q is not an accelerator %s runs with: use %s", h.Accel, name, strings.Join(caps.accel, ", "))
	}
	if caps.machine {
		switch h.Machine {
		case "", "microvm", "q35":
		default:
			bad(key("machine"), "%q is not a machine type the QEMU driver boots: use microvm or q35", h.Machine)
		}
	} else {
		if h.Machine != "" {
			bad(key("machine"), "is read by QEMU only: remove it from [hypervisor.%s]", name)
		}
		if h.MachineOptions != "" {
			bad(key("machine_options"), "is read by QEMU only: remove it from [hypervisor.%s]", name)
		}
	}
	switch {
	case h.Template == "" || h.Template == TemplateOff:
	case h.Template != TemplateAuto:
		bad(key("template"), "%q is not a template setting: use auto or off", h.Template)
	case name != vm.QEMU && name != vm.CloudHypervisor:
		bad(key("template"), "VM templates are implemented for qemu and cloud-hypervisor only: remove it from [hypervisor.%s] or set it to \"off\"", name)
	}
	switch {
	case h.TemplatePool < 0 || h.TemplatePool > MaxTemplatePool:
		bad(key("template_pool"), "%d is out of range: use 0 (no warm pool) to %d (each idle clone holds about 58 MiB)", h.TemplatePool, MaxTemplatePool)
	case h.TemplatePool > 0 && name != vm.QEMU:
		bad(key("template_pool"), "the warm pool of VM clones is implemented for qemu only (adopting a clone relocates its VMM, which only the QEMU driver does): remove it from [hypervisor.%s] or set it to 0", name)
	}
	for i, p := range h.KernelParams {
		if strings.TrimSpace(p) == "" || strings.ContainsAny(p, "\x00\n") {
			bad(key("kernel_params"), "entry %d (%q) is empty or holds a NUL or newline: give one parameter per entry", i, p)
		}
	}
}

// Accelerators DetectAccel reports.
const (
	// AccelKVM is hardware virtualisation through /dev/kvm.
	AccelKVM = "kvm"
	// AccelTCG is QEMU's software emulation (seconds per boot).
	AccelTCG = "tcg"
)

// DetectAccel reports the accelerator accel = "auto" picks on this host
// (AccelKVM or AccelTCG) and why, for preflight checks such as `kuasar
// check`, which thus need no driver package.
func DetectAccel(ctx context.Context) (accel, reason string) {
	return qemu.DetectAccel(ctx)
}
