package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
)

// Bounds of the [hypervisor.NAME] sizes. A guest kernel and the agent need
// MinMemoryMB to boot; MaxMemoryMB (1 TiB) is far above any micro-VM and
// catches a negative value TOML wrapped into a huge unsigned one.
const (
	// MinMemoryMB is the smallest memory_mb accepted.
	MinMemoryMB = 64
	// MaxMemoryMB is the largest memory_mb accepted.
	MaxMemoryMB = 1 << 20
	// maxSocketPath is the longest path a unix socket address holds.
	maxSocketPath = 107
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

// validateKeys checks every key whose value decodes but cannot work, and
// returns all the problems at once (errors.Join), each naming its key and
// the fix, each of kind ErrInvalidArgument. It checks values, not the
// host: whether the files it names exist is for the backend that uses them
// (and `kuasar check`), so a host without QEMU still serves Wasm pods.
func (c *Config) validateKeys() error {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument))
	}
	sb := c.Sandboxer
	socket := func(key, v string, required bool) {
		switch {
		case v == "" && required:
			bad("sandboxer."+key, "is empty: set the unix socket path")
		case v == "":
		case !filepath.IsAbs(v):
			bad("sandboxer."+key, "%q is not an absolute path: use one such as /run/kuasar/sandboxer.sock", v)
		case len(v) > maxSocketPath:
			bad("sandboxer."+key, "%q is %d bytes, over the %d a unix socket path holds: use a shorter path", v, len(v), maxSocketPath)
		}
	}
	socket("listen", sb.Listen, true)
	socket("containerd_address", sb.ContainerdAddress, false)
	socket("containerd_ttrpc_address", sb.ContainerdTTRPCAddress, false)
	absDir := func(key, v string, required bool) {
		switch {
		case v == "" && required:
			bad(key, "is empty: set an absolute directory")
		case v != "" && !filepath.IsAbs(v):
			bad(key, "%q is not an absolute path: the daemon's working directory is not part of its configuration", v)
		}
	}
	absDir("sandboxer.state_dir", sb.StateDir, true)
	isolation("sandboxer.default_isolation", sb.DefaultIsolation, false, bad)

	switch c.Wasm.Engine {
	case "", "wazero":
	default:
		bad("wasm.engine", "%q is not built into kuasar-sandboxer: use \"wazero\" (WasmEdge is for `kuasar run --engine wasmedge` in a -tags wasmedge build only)", c.Wasm.Engine)
	}
	absDir("wasm.cache_dir", c.Wasm.CacheDir, false)

	names := make([]string, 0, len(c.RuntimeHandlers))
	for n := range c.RuntimeHandlers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := c.RuntimeHandlers[n]
		key := "runtime_handlers." + n
		if n == "" {
			bad("runtime_handlers", "a handler has an empty name: name it as its RuntimeClass handler")
		}
		isolation(key+".isolation", h.Isolation, true, bad)
		if h.Hypervisor != "" {
			if _, ok := hypervisorCaps[h.Hypervisor]; !ok {
				bad(key+".hypervisor", "%q is not a hypervisor: use qemu, cloud-hypervisor or stratovirt", h.Hypervisor)
			} else if h.Isolation == "wasm" {
				bad(key+".hypervisor", "is set, but isolation is \"wasm\", which runs no VM: remove it or set isolation = \"vm\"")
			}
		}
	}

	if _, ok := hypervisorCaps[c.Hypervisor.Default]; !ok {
		bad("hypervisor.default", "%q is not a hypervisor: use qemu, cloud-hypervisor or stratovirt", c.Hypervisor.Default)
	}
	for _, name := range []string{vm.QEMU, vm.CloudHypervisor, vm.StratoVirt} {
		h, _ := c.Hypervisor.Get(name)
		validateHypervisor(name, h, bad)
	}
	return errors.Join(errs...)
}

// isolation checks a sandbox kind: "wasm", "vm" or "quark" ("" only where
// the key may be left unset).
func isolation(key, v string, emptyOK bool, bad func(string, string, ...any)) {
	switch v {
	case "wasm", "vm", "quark":
	case "":
		if !emptyOK {
			bad(key, "is empty: use \"wasm\", \"vm\" or \"quark\"")
		}
	default:
		bad(key, "%q is not a sandbox kind: use \"wasm\", \"vm\" or \"quark\"", v)
	}
}

// validateHypervisor checks one [hypervisor.NAME] section.
func validateHypervisor(name string, h Hypervisor, bad func(string, string, ...any)) {
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
	for i, p := range h.KernelParams {
		if strings.TrimSpace(p) == "" || strings.ContainsAny(p, "\x00\n") {
			bad(key("kernel_params"), "entry %d (%q) is empty or holds a NUL or newline: give one parameter per entry", i, p)
		}
	}
}
