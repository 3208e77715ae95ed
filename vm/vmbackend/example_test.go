package vmbackend_test

import (
	"context"
	"fmt"
	"os"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func ExampleNew() {
	b, err := vmbackend.New(context.Background(),
		vmbackend.WithHypervisor(vm.QEMU, vm.Config{
			Path:      "/usr/bin/qemu-system-x86_64",
			Kernel:    "/var/lib/kuasar/vmlinux",
			Initramfs: "/var/lib/kuasar/initramfs.img",
		}),
		vmbackend.WithDefaultHypervisor(vm.QEMU))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(b.Name())
	// Output: vm
}

// RunWorkload is what `kuasar run --isolation vm` calls: it boots a VM,
// runs one container from an unpacked rootfs and returns its exit code.
// (Not run as a test: it needs root and `make guest`; see TestRunWorkload
// and TestRunWorkloadBlock.)
func ExampleRunWorkload() {
	code, err := vmbackend.RunWorkload(context.Background(),
		vmbackend.RunConfig{Config: vm.Config{
			Path:      "/usr/bin/qemu-system-x86_64",
			Kernel:    "/var/lib/kuasar/vmlinux",
			Initramfs: "/var/lib/kuasar/initramfs.img",
			// "block": the rootfs as a read-only erofs image on
			// virtio-blk with a tmpfs overlay (needs mkfs.erofs);
			// "9p" (the default) shares the directory instead.
			RootfsMode: vm.ShareBlock,
		}},
		"/path/to/unpacked/rootfs",
		vmbackend.Process{Args: []string{"/bin/sh", "-c", "echo hi"}, Env: []string{"PATH=/bin"}},
		os.Stdin, os.Stdout, os.Stderr)
	fmt.Println(code, err)
}
