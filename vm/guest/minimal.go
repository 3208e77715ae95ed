package guest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/errdefs"
)

// MinimalConfig are the kernel options (without CONFIG_) a minimal
// sandbox guest kernel enables on top of tinyconfig: PVH boot as a KVM
// guest, virtio-mmio devices from the command line, the serial console,
// virtio console/blk/net, vsock, 9p, erofs, ext4, overlay, tmpfs,
// devtmpfs, the namespaces and cgroups containers need, and what the Go
// runtime and busybox expect from the kernel. Everything is built in.
var MinimalConfig = []string{
	"64BIT", "SMP", "PRINTK", "TTY", "UNIX98_PTYS", "BLK_DEV_INITRD", "BINFMT_ELF", "BINFMT_SCRIPT",
	"PROC_FS", "PROC_SYSCTL", "SYSFS", "TMPFS", "DEVTMPFS", "MULTIUSER", "FUTEX", "EPOLL",
	"SIGNALFD", "TIMERFD", "EVENTFD", "SHMEM", "POSIX_TIMERS", "FILE_LOCKING", "ADVISE_SYSCALLS",
	"SYSVIPC", "POSIX_MQUEUE", "INOTIFY_USER", "SECCOMP", "HIGH_RES_TIMERS",
	"HYPERVISOR_GUEST", "PARAVIRT", "KVM_GUEST", "PVH",
	"SERIAL_8250", "SERIAL_8250_CONSOLE",
	"VIRTIO_MENU", "VIRTIO", "VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES", "VIRTIO_CONSOLE",
	"BLOCK", "BLK_DEV", "VIRTIO_BLK", "NET", "UNIX", "INET", "NETDEVICES", "NET_CORE", "VIRTIO_NET",
	"VSOCKETS", "VIRTIO_VSOCKETS", "NET_9P", "NET_9P_VIRTIO", "NETWORK_FILESYSTEMS", "9P_FS",
	"MISC_FILESYSTEMS", "EROFS_FS", "EXT4_FS", "OVERLAY_FS",
	"NAMESPACES", "UTS_NS", "IPC_NS", "PID_NS", "NET_NS", "CGROUPS", "MEMCG", "CGROUP_PIDS",
}

// MinimalKernel is a built minimal kernel.
type MinimalKernel struct {
	// Vmlinux is the ELF kernel with a PVH note.
	Vmlinux string
	// Release is its `make kernelrelease`.
	Release string
}

// BuildMinimalKernel builds (or finds in cacheDir) a kernel from Debian's
// linux-source-6.1 package with tinyconfig plus MinimalConfig. It takes
// about 10 minutes on 2 cores the first time; the result is cached by the
// source package and the option list. Build output goes to logw.
func BuildMinimalKernel(ctx context.Context, cacheDir string, logw io.Writer) (MinimalKernel, error) {
	debs := filepath.Join(cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return MinimalKernel{}, err
	}
	src, _ := filepath.Glob(filepath.Join(debs, "linux-source-6.1_*.deb"))
	if len(src) == 0 {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "linux-source-6.1")
		cmd.Dir = debs
		if out, err := cmd.CombinedOutput(); err != nil {
			return MinimalKernel{}, fmt.Errorf("apt-get download linux-source-6.1: %w: %s: %w", err, out, errdefs.ErrUnavailable)
		}
		src, _ = filepath.Glob(filepath.Join(debs, "linux-source-6.1_*.deb"))
		if len(src) == 0 {
			return MinimalKernel{}, fmt.Errorf("linux-source-6.1 .deb not found after download: %w", errdefs.ErrNotFound)
		}
	}
	deb := src[len(src)-1]
	h := sha256.Sum256([]byte(filepath.Base(deb) + "\x00" + strings.Join(MinimalConfig, ",")))
	out := filepath.Join(cacheDir, "minimal-kernel", hex.EncodeToString(h[:])[:12])
	if rel, err := os.ReadFile(filepath.Join(out, "release")); err == nil {
		return MinimalKernel{Vmlinux: filepath.Join(out, KernelName), Release: strings.TrimSpace(string(rel))}, nil
	}
	work, err := os.MkdirTemp(cacheDir, "kbuild-")
	if err != nil {
		return MinimalKernel{}, err
	}
	defer os.RemoveAll(work)
	run := func(dir string, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = logw, logw
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}
	if err := run(work, "dpkg-deb", "-x", deb, "pkg"); err != nil {
		return MinimalKernel{}, err
	}
	tars, _ := filepath.Glob(filepath.Join(work, "pkg", "usr", "src", "linux-source-6.1*.tar.*"))
	if len(tars) != 1 {
		return MinimalKernel{}, fmt.Errorf("linux-source tarball not found in %s: %w", deb, errdefs.ErrNotFound)
	}
	if err := run(work, "tar", "-xaf", tars[0]); err != nil {
		return MinimalKernel{}, err
	}
	os.RemoveAll(filepath.Join(work, "pkg"))
	dirs, _ := filepath.Glob(filepath.Join(work, "linux-source-6.1*"))
	if len(dirs) != 1 {
		return MinimalKernel{}, fmt.Errorf("unpacked source tree not found: %w", errdefs.ErrNotFound)
	}
	ksrc := dirs[0]
	if err := run(ksrc, "make", "tinyconfig"); err != nil {
		return MinimalKernel{}, err
	}
	args := []string{"--file", ".config"}
	for _, o := range MinimalConfig {
		args = append(args, "--enable", o)
	}
	if err := run(ksrc, "scripts/config", args...); err != nil {
		return MinimalKernel{}, err
	}
	if err := run(ksrc, "make", "olddefconfig"); err != nil {
		return MinimalKernel{}, err
	}
	if missing := missingOptions(filepath.Join(ksrc, ".config")); len(missing) > 0 {
		return MinimalKernel{}, fmt.Errorf("kernel options dropped by olddefconfig (unmet dependencies): %s: %w", strings.Join(missing, " "), errdefs.ErrFailedPrecondition)
	}
	jobs := fmt.Sprintf("-j%d", runtime.NumCPU())
	if err := run(ksrc, "nice", "-n", "19", "make", jobs, "vmlinux"); err != nil {
		return MinimalKernel{}, err
	}
	cmd := exec.CommandContext(ctx, "make", "-s", "kernelrelease")
	cmd.Dir = ksrc
	rel, err := cmd.Output()
	if err != nil {
		return MinimalKernel{}, fmt.Errorf("make kernelrelease: %w", err)
	}
	vml, err := os.ReadFile(filepath.Join(ksrc, "vmlinux"))
	if err != nil {
		return MinimalKernel{}, err
	}
	if err := CheckPVH(vml); err != nil {
		return MinimalKernel{}, err
	}
	tmp := filepath.Join(work, "out")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return MinimalKernel{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, KernelName), vml, 0o644); err != nil {
		return MinimalKernel{}, err
	}
	cfg, _ := os.ReadFile(filepath.Join(ksrc, ".config"))
	os.WriteFile(filepath.Join(tmp, "config"), cfg, 0o644)
	if err := os.WriteFile(filepath.Join(tmp, "release"), rel, 0o644); err != nil {
		return MinimalKernel{}, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return MinimalKernel{}, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return MinimalKernel{}, err
	}
	return MinimalKernel{Vmlinux: filepath.Join(out, KernelName), Release: strings.TrimSpace(string(rel))}, nil
}

func missingOptions(config string) []string {
	f, err := os.Open(config)
	if err != nil {
		return []string{"(no .config)"}
	}
	defer f.Close()
	set := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && v == "y" {
			set[strings.TrimPrefix(k, "CONFIG_")] = true
		}
	}
	var miss []string
	for _, o := range MinimalConfig {
		if !set[o] {
			miss = append(miss, o)
		}
	}
	return miss
}
