package config

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/qemu"
	"github.com/kuasar-go/kuasar/vm/stratovirt"
)

// TestValidateEveryKey feeds one bad value per key over the shipped
// defaults: each must be refused at start-up (Parse is what Load runs) with
// an InvalidArgument error naming the key and saying what to use.
func TestValidateEveryKey(t *testing.T) {
	tests := []struct {
		name, in string
		key, fix string
	}{
		{"unknown default isolation", "[sandboxer]\ndefault_isolation = \"gvisor\"\n", "sandboxer.default_isolation", `use "wasm", "vm" or "quark"`},
		{"empty default isolation", "[sandboxer]\ndefault_isolation = \"\"\n", "sandboxer.default_isolation", `use "wasm", "vm" or "quark"`},
		{"handler isolation unknown", "[runtime_handlers.x]\nisolation = \"docker\"\n", "runtime_handlers.x.isolation", `use "wasm", "vm" or "quark"`},
		{"handler hypervisor unknown", "[runtime_handlers.x]\nisolation = \"vm\"\nhypervisor = \"firecracker\"\n", "runtime_handlers.x.hypervisor", "use qemu, cloud-hypervisor or stratovirt"},
		{"handler hypervisor on wasm", "[runtime_handlers.x]\nisolation = \"wasm\"\nhypervisor = \"qemu\"\n", "runtime_handlers.x.hypervisor", `set isolation = "vm"`},
		{"empty listen", "[sandboxer]\nlisten = \"\"\n", "sandboxer.listen", "set the unix socket path"},
		{"relative listen", "[sandboxer]\nlisten = \"kuasar.sock\"\n", "sandboxer.listen", "absolute path"},
		{"listen over the socket limit", "[sandboxer]\nlisten = \"/run/" + strings.Repeat("x", 110) + ".sock\"\n", "sandboxer.listen", "shorter path"},
		{"containerd address too long", "[sandboxer]\ncontainerd_address = \"/" + strings.Repeat("c", 120) + "\"\n", "sandboxer.containerd_address", "shorter path"},
		{"containerd ttrpc address relative", "[sandboxer]\ncontainerd_ttrpc_address = \"containerd.sock.ttrpc\"\n", "sandboxer.containerd_ttrpc_address", "absolute path"},
		{"empty state dir", "[sandboxer]\nstate_dir = \"\"\n", "sandboxer.state_dir", "absolute directory"},
		{"relative state dir", "[sandboxer]\nstate_dir = \"state\"\n", "sandboxer.state_dir", "not an absolute path"},
		{"world-writable socket mode", "[sandboxer]\nsocket_mode = \"0666\"\n", "sandboxer.socket_mode", `"0600" or "0660"`},
		{"socket mode not octal", "[sandboxer]\nsocket_mode = \"rw-------\"\n", "sandboxer.socket_mode", `"0600" or "0660"`},
		{"log level", "[sandboxer]\nlog_level = \"verbose\"\n", "sandboxer.log_level", "trace, debug, info"},
		{"wasm engine not built in", "[wasm]\nengine = \"wasmtime\"\n", "wasm.engine", `use "wazero"`},
		{"wasm cache dir relative", "[wasm]\ncache_dir = \"cache\"\n", "wasm.cache_dir", "not an absolute path"},
		{"default hypervisor unknown", "[hypervisor]\ndefault = \"kvmtool\"\n", "hypervisor.default", "use qemu, cloud-hypervisor or stratovirt"},
		{"vcpus = 0", "[hypervisor.qemu]\nvcpus = 0\n", "hypervisor.qemu.vcpus", "use 1 to 32"},
		{"vcpus absurd", "[hypervisor.stratovirt]\nvcpus = 4096\n", "hypervisor.stratovirt.vcpus", "use 1 to 32"},
		{"vcpus negative", "[hypervisor.qemu]\nvcpus = -1\n", "hypervisor.qemu.vcpus", "out of range"},
		{"memory too small", "[hypervisor.qemu]\nmemory_mb = 16\n", "hypervisor.qemu.memory_mb", "use 64 to 1048576"},
		{"memory absurd", "[hypervisor.cloud-hypervisor]\nmemory_mb = 4194304\n", "hypervisor.cloud-hypervisor.memory_mb", "use 64 to 1048576"},
		{"memory negative", "[hypervisor.qemu]\nmemory_mb = -256\n", "hypervisor.qemu.memory_mb", "negative value"},
		{"rootfs mode unknown", "[hypervisor.qemu]\nrootfs_mode = \"nfs\"\n", "hypervisor.qemu.rootfs_mode", "use 9p or block"},
		{"virtiofs on qemu", "[hypervisor.qemu]\nrootfs_mode = \"virtiofs\"\n", "hypervisor.qemu.rootfs_mode", "use 9p or block"},
		{"9p on cloud hypervisor", "[hypervisor.cloud-hypervisor]\nrootfs_mode = \"9p\"\n", "hypervisor.cloud-hypervisor.rootfs_mode", "use virtiofs or block"},
		{"virtiofs without virtiofsd", "[hypervisor.stratovirt]\nvirtiofsd = \"\"\n", "hypervisor.stratovirt.virtiofsd", "set the virtiofsd binary"},
		{"accel unknown", "[hypervisor.qemu]\naccel = \"hvf\"\n", "hypervisor.qemu.accel", "use auto, kvm, tcg"},
		{"tcg on cloud hypervisor", "[hypervisor.cloud-hypervisor]\naccel = \"tcg\"\n", "hypervisor.cloud-hypervisor.accel", "use auto, kvm"},
		{"machine unknown", "[hypervisor.qemu]\nmachine = \"pc\"\n", "hypervisor.qemu.machine", "use microvm or q35"},
		{"machine on stratovirt", "[hypervisor.stratovirt]\nmachine = \"q35\"\n", "hypervisor.stratovirt.machine", "read by QEMU only"},
		{"machine options on cloud hypervisor", "[hypervisor.cloud-hypervisor]\nmachine_options = \"acpi=off\"\n", "hypervisor.cloud-hypervisor.machine_options", "read by QEMU only"},
		{"relative hypervisor path", "[hypervisor.qemu]\npath = \"qemu-system-x86_64\"\n", "hypervisor.qemu.path", "absolute path"},
		{"relative kernel", "[hypervisor.stratovirt]\nkernel = \"vmlinux\"\n", "hypervisor.stratovirt.kernel", "absolute path"},
		{"relative initramfs", "[hypervisor.qemu]\ninitramfs = \"./initramfs.img\"\n", "hypervisor.qemu.initramfs", "absolute path"},
		{"relative virtiofsd", "[hypervisor.cloud-hypervisor]\nvirtiofsd = \"virtiofsd\"\n", "hypervisor.cloud-hypervisor.virtiofsd", "absolute path"},
		{"empty kernel parameter", "[hypervisor.qemu]\nkernel_params = [\"quiet\", \" \"]\n", "hypervisor.qemu.kernel_params", "one parameter per entry"},
		{"unknown key", "[hypervisor.qemu]\nvcpu = 2\n", "hypervisor.qemu.vcpu", "remove or correct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.in)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), tt.fix) {
				t.Fatalf("error %q, want it to name %q and the fix %q", err, tt.key, tt.fix)
			}
		})
	}
}

// TestValidateGoodValues: the shipped defaults and the values the bounds
// allow are accepted.
func TestValidateGoodValues(t *testing.T) {
	for _, in := range []string{
		"",
		"[sandboxer]\ndefault_isolation = \"vm\"\nsocket_mode = \"0660\"\n",
		"[hypervisor.qemu]\nvcpus = 32\nmemory_mb = 64\nmachine = \"q35\"\naccel = \"tcg\"\nrootfs_mode = \"block\"\n",
		"[hypervisor.cloud-hypervisor]\nvcpus = 1\nmemory_mb = 1048576\naccel = \"kvm\"\n",
		"[runtime_handlers.fast]\nisolation = \"vm\"\nhypervisor = \"stratovirt\"\n[runtime_handlers.plain]\n",
		"[wasm]\ncache_dir = \"\"\n",
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("refused %q: %v", in, err)
		}
	}
}

// TestValidateReportsEveryBadKey: an operator fixes a file in one go, so
// every bad key is reported, not only the first.
func TestValidateReportsEveryBadKey(t *testing.T) {
	_, err := Parse([]byte("[sandboxer]\ndefault_isolation = \"gvisor\"\n[hypervisor.qemu]\nvcpus = 0\nmemory_mb = 1\n"))
	for _, key := range []string{"sandboxer.default_isolation", "hypervisor.qemu.vcpus", "hypervisor.qemu.memory_mb"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}

// TestHypervisorCapsMatchDrivers keeps the rootfs modes validation accepts
// in step with what each driver says it implements.
func TestHypervisorCapsMatchDrivers(t *testing.T) {
	cfg := vm.Config{Path: "/bin/sh", Kernel: "/bin/sh", Initramfs: "/bin/sh", VirtioFSD: "/bin/sh"}
	spec := vm.Spec{ID: "caps", StateDir: t.TempDir(), Config: cfg}
	q, err := qemu.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudhypervisor.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, err := stratovirt.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	for name, caps := range map[string]vm.Capabilities{vm.QEMU: q.Capabilities(), vm.CloudHypervisor: c.Capabilities(), vm.StratoVirt: s.Capabilities()} {
		want := hypervisorCaps[name].rootfsModes
		got := slices.Clone(caps.ShareModes)
		slices.Sort(got)
		want = slices.Clone(want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: driver implements rootfs modes %v, validation accepts %v", name, caps.ShareModes, hypervisorCaps[name].rootfsModes)
		}
	}
}
