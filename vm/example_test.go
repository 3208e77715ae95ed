package vm_test

import (
	"fmt"

	"github.com/kuasar-go/kuasar/vm"
)

// A pod limited to 1.5 CPUs and 512 MiB gets 2 vCPUs and 512+128 MiB.
func ExampleSizes() {
	cfg := vm.Config{VCPUs: 1, MemoryMB: 256}
	vcpus, mem := vm.Sizes(cfg, vm.Resources{CPUQuota: 150000, CPUPeriod: 100000, MemoryLimitBytes: 512 << 20})
	fmt.Println(vcpus, mem)
	vcpus, mem = vm.Sizes(cfg, vm.Resources{})
	fmt.Println(vcpus, mem)
	// Output:
	// 2 640
	// 1 256
}

func ExampleConfig_Validate() {
	err := vm.Config{Path: "/bin/true", Kernel: "/nonexistent/vmlinux", Initramfs: "/bin/true"}.Validate("qemu")
	fmt.Println(err != nil)
	// Output: true
}
