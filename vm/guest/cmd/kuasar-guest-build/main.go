// Command kuasar-guest-build builds the micro-VM guest kernel and initramfs
// (see package vm/guest) into a versioned directory and prints it as JSON.
//
//	go run ./vm/guest/cmd/kuasar-guest-build -out /var/lib/kuasar/guest -link /var/lib/kuasar
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kuasar-go/kuasar/vm/guest"
)

func main() {
	var o guest.Options
	out := flag.String("out", envOr("KUASAR_GUEST_DIR", guest.DefaultBaseDir), "base directory for versioned guest builds")
	link := flag.String("link", "", "directory in which to (re)point vmlinux and initramfs.img symlinks at the build (e.g. /var/lib/kuasar)")
	mods := flag.String("modules", strings.Join(guest.DefaultModules, ","), "comma-separated kernel modules to include (dependencies are added); add virtio_pci for q35")
	flag.StringVar(&o.CacheDir, "cache", "", "download cache (default $HOME/.cache/kuasar-guest)")
	flag.StringVar(&o.KernelDeb, "kernel-deb", "", "use this kernel .deb instead of downloading linux-image-amd64's kernel")
	flag.StringVar(&o.Agent, "agent", "", "prebuilt static kuasar-task binary (default: go build ./cmd/kuasar-task)")
	flag.StringVar(&o.SourceDir, "src", ".", "kuasar source tree to build the agent from")
	keep := flag.Int("keep", 3, "keep this many built versions under -out (0: keep all)")
	flag.BoolVar(&o.MinimalKernel, "minimal", false, "build (once, ~10 min on 2 cores, cached) a minimal kernel from linux-source-6.1 with everything built in, instead of Debian's stock kernel; boot it with machine options acpi=off")
	flag.Parse()
	o.BaseDir = *out
	if *mods != "" {
		o.Modules = strings.Split(*mods, ",")
	} else {
		o.Modules = []string{}
	}
	o.BuildLog = os.Stderr
	a, err := guest.Build(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kuasar-guest-build:", err)
		os.Exit(1)
	}
	if *keep > 0 {
		if err := guest.Prune(o.BaseDir, *keep, a.Dir); err != nil {
			fmt.Fprintln(os.Stderr, "kuasar-guest-build: pruning old versions:", err)
		}
	}
	if *link != "" {
		if err := guest.Link(a, *link); err != nil {
			fmt.Fprintln(os.Stderr, "kuasar-guest-build:", err)
			os.Exit(1)
		}
	}
	b, _ := json.MarshalIndent(a, "", "  ")
	fmt.Println(string(b))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
