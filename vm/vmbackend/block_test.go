package vmbackend_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestRunWorkloadBlock runs a container whose rootfs reaches the guest as
// an erofs image on virtio-blk with a tmpfs overlay: a file of the image
// is read, writes land in the overlay (never in the host directory), the
// exit code comes back, and nothing is left behind.
func TestRunWorkloadBlock(t *testing.T) {
	a, ctx := vmTest(t, 2*time.Minute)
	cfg := qemuConfig(t, a)
	cfg.RootfsMode = vm.ShareBlock
	root := busyboxRootfs(t)
	if err := os.WriteFile(filepath.Join(root, "etc", "marker"), []byte("from-image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	var stdout, stderr bytes.Buffer
	t0 := time.Now()
	code, err := runWorkload(ctx, cfg, state, root, "",
		[]string{"/bin/sh", "-c",
			"cat /etc/marker; echo w > /tmp/x && cat /tmp/x; echo e > /etc/marker && cat /etc/marker; cat /proc/self/mountinfo >&2; exit 4"},
		[]string{"PATH=/bin"}, nil, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run with rootfs_mode block took %v", time.Since(t0))
	if code != 4 {
		t.Errorf("exit code %d, want 4 (stderr %q)", code, stderr.String())
	}
	if want := "from-image\nw\ne\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q (stderr %q)", stdout.String(), want, stderr.String())
	}
	// The container's root is the overlay, not a 9p mount of the host dir.
	rootLine := ""
	for _, l := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == "/" {
			rootLine = l
		}
	}
	t.Logf("container root mount: %s", rootLine)
	if !strings.Contains(rootLine, " - overlay ") {
		t.Errorf("container root mount %q, want an overlay; mountinfo:\n%s", rootLine, stderr.String())
	}
	// The writes stayed in the guest: the host rootfs is untouched.
	if _, err := os.Stat(filepath.Join(root, "tmp", "x")); err == nil {
		t.Error("/tmp/x written in the container reached the host rootfs")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc", "marker")); string(b) != "from-image\n" {
		t.Errorf("host /etc/marker is %q after the run, want it untouched", b)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state (image, sockets) left behind: %v", ents)
	}
	if m := mountsUnder(state); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu processes left: %v", got)
	}
}

// TestRunWorkloadBlockWithoutMkfs checks that a missing or failing
// mkfs.erofs is reported, naming the tool and the package to install,
// before any VM starts, and leaves nothing behind.
func TestRunWorkloadBlockWithoutMkfs(t *testing.T) {
	cfg := vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: vm.ShareBlock}
	root := t.TempDir()
	for _, tc := range []struct {
		name, path, tool string
		want             []string
	}{
		{"not in PATH", t.TempDir(), "", []string{"mkfs.erofs", "apt-get install erofs-utils"}},
		{"configured path missing", "", "/nonexistent/mkfs.erofs", []string{"/nonexistent/mkfs.erofs", "apt-get install erofs-utils"}},
		{"tool fails", "", "/bin/false", []string{"/bin/false", "failed", "exit status 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path != "" {
				t.Setenv("PATH", tc.path)
			}
			state := t.TempDir()
			_, err := runWorkload(context.Background(), cfg, state, root, tc.tool, []string{"/bin/true"}, nil, nil, io.Discard, io.Discard)
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err %v, want FailedPrecondition", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(state); len(ents) != 0 {
				t.Errorf("state left behind: %v", ents)
			}
		})
	}
}

// TestBlockRefusedForPods checks that a pod sandbox (containers arrive
// after boot, no disk hotplug) is refused in block mode with the reason
// and the mode to use instead, before anything starts.
func TestBlockRefusedForPods(t *testing.T) {
	for _, hv := range []string{vm.QEMU, vm.CloudHypervisor} {
		cfg := vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: vm.ShareBlock}
		b, err := vmbackend.New(context.Background(), vmbackend.WithHypervisor(hv, cfg), vmbackend.WithDefaultHypervisor(hv))
		if err != nil {
			t.Fatal(err)
		}
		state := t.TempDir()
		_, err = b.Start(context.Background(), backend.Sandbox{ID: "blockpod", StateDir: state})
		if !errdefs.IsNotImplemented(err) {
			t.Fatalf("%s: err %v, want NotImplemented", hv, err)
		}
		for _, w := range []string{"kuasar run", "hotplug", `rootfs_mode = "9p"`} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", hv, err, w)
			}
		}
		if ents, _ := os.ReadDir(state); len(ents) != 0 {
			t.Errorf("%s: state left behind: %v", hv, ents)
		}
	}
}
