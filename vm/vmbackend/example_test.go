package vmbackend_test

import (
	"context"
	"fmt"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
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

// WithBootRootfs tells a backend made for one known container (as `kuasar
// run --isolation vm` makes it) that container's rootfs before boot: with
// rootfs_mode "block" Start attaches it as a read-only erofs image on
// virtio-blk with a tmpfs overlay (needs mkfs.erofs); "9p" (the default)
// shares the directory instead. The container then runs through the
// Instance's Task API like any other. (Not run as a test: it needs root
// and `make guest`; see TestRunWorkloadBlock.)
func ExampleWithBootRootfs() {
	b, err := vmbackend.New(context.Background(),
		vmbackend.WithHypervisor(vm.QEMU, vm.Config{
			Path:       "/usr/bin/qemu-system-x86_64",
			Kernel:     "/var/lib/kuasar/vmlinux",
			Initramfs:  "/var/lib/kuasar/initramfs.img",
			RootfsMode: vm.ShareBlock,
		}),
		vmbackend.WithBootRootfs("workload", "/path/to/unpacked/rootfs", ""))
	if err != nil {
		fmt.Println(err)
		return
	}
	inst, err := b.Start(context.Background(), backend.Sandbox{ID: "run", StateDir: "/run/kuasar-example/run"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer inst.Shutdown(context.Background())
	// inst.Tasks().Create(ctx, &taskAPI.CreateTaskRequest{ID: "workload", ...})
}
