package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/images"
)

// BenchmarkRunVMWarm times a fresh `kuasar run --isolation vm` process of a
// busybox image (`echo hi`) after the first run: the image is imported and
// the VM template built, so each run restores a micro-VM from the template,
// runs the container and tears everything down (the whole process, as a
// user sees it). The "template=off" row boots the same guest cold, side by
// side in one run. Besides ns/op it reports the median (median-ms), which
// a busy machine disturbs less. Needs root, QEMU and the guest (make guest).
//
//	go test ./cmd/kuasar -run XXX -bench RunVMWarm -benchtime=10x
func BenchmarkRunVMWarm(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (mounts, QEMU)")
	}
	bin := binary(b)
	cfg, err := backends.Parse(nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := cfg.VM.QEMU.Validate("qemu"); err != nil {
		b.Skipf("the default VM configuration is not usable: %v (run make deps and make guest)", err)
	}
	files, err := images.BusyboxFiles("/bin/busybox", "sh", "echo")
	if err != nil {
		b.Skipf("%v (run make deps)", err)
	}
	img, err := images.BuildLinuxImage(context.Background(), files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}}, ocispec.Platform{})
	if err != nil {
		b.Fatal(err)
	}
	archive := filepath.Join(b.TempDir(), "busybox.tar")
	if err := img.WriteArchiveFile(archive, "docker.io/library/busybox-bench:local"); err != nil {
		b.Fatal(err)
	}
	state := b.TempDir()
	env := append(os.Environ(), "KUASAR_STATE_DIR="+state)
	b.Cleanup(func() {
		// The template's memory lives on /dev/shm, outside the state
		// directory.
		cmd := exec.Command(bin, "vm-templates", "rm")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Errorf("vm-templates rm: %v: %s", err, out)
		}
	})
	// The first run imports the image and builds the template.
	runVM(b, bin, env, archive, "auto")
	for _, tmpl := range []string{"auto", "off"} {
		b.Run("template="+tmpl, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				runVM(b, bin, env, "docker.io/library/busybox-bench:local", tmpl)
				took = append(took, time.Since(t0))
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
		})
	}
}

// runVM runs `kuasar run --isolation vm --vm-template TMPL IMAGE -- "echo
// hi"` and checks its output.
func runVM(b *testing.B, bin string, env []string, image, tmpl string) {
	b.Helper()
	cmd := exec.Command(bin, "run", "--isolation", "vm", "--vm-template", tmpl, image, "--", "echo hi")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hi\n" {
		b.Fatalf("kuasar run: %v: %q", err, out)
	}
}
