package guestinit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
)

func ExampleParseCmdline() {
	cfg, err := guestinit.ParseCmdline("console=hvc0 quiet kuasar.channel=serial kuasar.debug=1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Channel, cfg.Debug)
	// Output: serial true
}

func ExampleLoadModules() {
	root, _ := os.MkdirTemp("", "initramfs")
	defer os.RemoveAll(root)
	os.MkdirAll(filepath.Join(root, "etc/kuasar"), 0o755)
	os.MkdirAll(filepath.Join(root, "lib/modules"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/kuasar/modules.load"), []byte("virtio_ring.ko\nvirtio_console.ko\n"), 0o644)
	for _, m := range []string{"virtio_ring.ko", "virtio_console.ko"} {
		os.WriteFile(filepath.Join(root, "lib/modules", m), nil, 0o644)
	}
	// In the guest the loader is guestinit.FinitModule.
	dryRun := func(f *os.File) error { return nil }
	loaded, err := guestinit.LoadModules(context.Background(), root, dryRun)
	fmt.Println(loaded, err)
	// Output: [virtio_ring.ko virtio_console.ko] <nil>
}
