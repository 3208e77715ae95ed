package backends

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/quark"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// TestDefaultsMatchShippedFile: each backend's Go defaults are the values
// configs/config.toml ships, so a section left out of a file and the
// shipped file mean the same.
func TestDefaultsMatchShippedFile(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Wasm, wasmbackend.DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("[wasm] of configs/config.toml %+v, wasmbackend.DefaultConfig %+v", got, want)
	}
	if got, want := c.VM, vmbackend.DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("[hypervisor] of configs/config.toml\n%+v\nvmbackend.DefaultConfig\n%+v", got, want)
	}
	if got, want := c.Quark, quark.DefaultConfig(); got != want {
		t.Errorf("[quark] of configs/config.toml %+v, quark.DefaultConfig %+v", got, want)
	}
	// The shipped file, read as a user's file over the defaults, loads too.
	if _, err := Parse(configs.SandboxerDefault); err != nil {
		t.Errorf("configs/config.toml as a user file: %v", err)
	}
}

// TestValidateEveryBackendKey feeds one bad value per key of the backends'
// sections over the shipped defaults: each must be refused at start-up
// with an InvalidArgument error naming the key and saying what to use.
func TestValidateEveryBackendKey(t *testing.T) {
	tests := []struct {
		name, in string
		key, fix string
	}{
		{"unknown section", "[bogus]\nx = 1\n", "bogus", "remove or correct"},
		{"unknown hypervisor key", "[hypervisor.qemu]\nmemory = 5\n", "hypervisor.qemu.memory", "remove or correct"},
		{"unknown wasm key", "[wasm]\ncache = \"/x\"\n", "wasm.cache", "remove or correct"},
		{"hypervisor value of the wrong type", "[hypervisor.qemu]\nvcpus = \"two\"\n", "[hypervisor]", "vcpus"},
		{"handler hypervisor unknown", "[runtime_handlers.x]\nisolation = \"vm\"\nhypervisor = \"firecracker\"\n", "runtime_handlers.x.hypervisor", "use qemu, cloud-hypervisor or stratovirt"},
		{"wasm engine unknown", "[wasm]\nengine = \"wasmtime\"\n", "wasm.engine", `use "wazero" or "wasmedge"`},
		{"handler wasm engine unknown", "[runtime_handlers.x]\nisolation = \"wasm\"\nwasm_engine = \"wasmtime\"\n", "runtime_handlers.x.wasm_engine", `use "wazero" or "wasmedge"`},
		{"wasm cache dir relative", "[wasm]\ncache_dir = \"cache\"\n", "wasm.cache_dir", "not an absolute path"},
		{"memory limit not a size", "[wasm]\ndefault_memory_limit = \"lots\"\n", "wasm.default_memory_limit", "Mi"},
		{"memory limit over wasm32", "[wasm]\ndefault_memory_limit = \"5Gi\"\n", "wasm.default_memory_limit", "at most 4Gi"},
		{"memory limit zero", "[wasm]\ndefault_memory_limit = \"0\"\n", "wasm.default_memory_limit", ""},
		{"open file limit too low", "[wasm]\ndefault_open_file_limit = 2\n", "wasm.default_open_file_limit", "at least 8"},
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
		{"template setting unknown", "[hypervisor.qemu]\ntemplate = \"always\"\n", "hypervisor.qemu.template", "use auto or off"},
		{"template on stratovirt", "[hypervisor.stratovirt]\ntemplate = \"auto\"\n", "hypervisor.stratovirt.template", "qemu and cloud-hypervisor only"},
		{"pool on cloud hypervisor", "[hypervisor.cloud-hypervisor]\ntemplate_pool = 2\n", "hypervisor.cloud-hypervisor.template_pool", "qemu only"},
		{"quark binary empty", "[quark]\nbinary = \"\"\n", "quark.binary", "set the quark executable"},
		{"quark config file relative", "[quark]\nconfig_file = \"quark.json\"\n", "quark.config_file", "absolute path"},
		{"unknown quark key", "[quark]\nsandboxed = true\n", "quark.sandboxed", "remove or correct"},
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

// TestValidateGoodValues: values the bounds allow are accepted.
func TestValidateGoodValues(t *testing.T) {
	for _, in := range []string{
		"",
		"[hypervisor.qemu]\nvcpus = 32\nmemory_mb = 64\nmachine = \"q35\"\naccel = \"tcg\"\nrootfs_mode = \"block\"\ntemplate = \"off\"\n",
		"[hypervisor.cloud-hypervisor]\nvcpus = 1\nmemory_mb = 1048576\naccel = \"kvm\"\ntemplate = \"auto\"\n",
		"[runtime_handlers.fast]\nisolation = \"vm\"\nhypervisor = \"stratovirt\"\n",
		"[wasm]\ncache_dir = \"\"\ndefault_memory_limit = \"100M\"\n",
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("refused %q: %v", in, err)
		}
	}
	c, err := Parse([]byte("[wasm]\ndefault_memory_limit = \"100M\"\n[hypervisor.qemu]\nvcpus = 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Wasm.MemoryLimitBytes(); n != 100e6 || c.Wasm.DefaultOpenFileLimit != 1024 {
		t.Errorf("wasm section %+v: want 100M and the default open-file limit", c.Wasm)
	}
	if c.VM.QEMU.VCPUs != 2 || c.VM.QEMU.MemoryMB != 256 || c.VM.QEMU.Path == "" {
		t.Errorf("qemu section %+v: want 2 vCPUs over the defaults", c.VM.QEMU)
	}
}

// TestValidateReportsEveryBadKey: an operator fixes a file in one go, so
// every bad key of every section is reported, not only the first.
func TestValidateReportsEveryBadKey(t *testing.T) {
	_, err := Parse([]byte("[sandboxer]\ndefault_isolation = \"gvisor\"\n[wasm]\ndefault_open_file_limit = 1\n[hypervisor.qemu]\nvcpus = 0\nmemory_mb = 1\n"))
	for _, key := range []string{"sandboxer.default_isolation", "wasm.default_open_file_limit", "hypervisor.qemu.vcpus", "hypervisor.qemu.memory_mb"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}

// TestDecodeNeedsNoBackendInConfig: sandboxer/config hands the backends'
// tables over without knowing them; a table only this package routes is
// refused by config.Unowned when no backend claims it.
func TestDecodeNeedsNoBackendInConfig(t *testing.T) {
	c, err := config.Parse([]byte("[quark]\nx = 1\n"))
	if err != nil {
		t.Fatalf("sandboxer/config itself must not judge backend tables: %v", err)
	}
	if _, err := Decode(c); err == nil || !strings.Contains(err.Error(), "quark") {
		t.Fatalf("unowned [quark]: %v", err)
	}
}
