// Package guest builds the micro-VM guest artifacts: a kernel that boots
// directly (an ELF vmlinux with a PVH note, taken from Debian's stock
// kernel package) and an initramfs whose /init is the static kuasar-task
// agent, with the kernel modules the agent loads listed in
// /etc/kuasar/modules.load. Everything is assembled by Go code without
// root; results are cached in a directory named after the kernel release
// and the agent's hash, built in a temporary directory and renamed into
// place so an interrupted build never leaves a half-written version.
package guest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// DefaultModules are the modules the agent needs on Debian 12's kernel:
// virtio-mmio and the console (virtio-serial agent channel), 9p (the
// shared directory), virtio vsock (the agent channel on Cloud Hypervisor
// and StratoVirt), and virtio-blk + erofs + overlay (rootfs_mode "block":
// a read-only erofs image with a tmpfs upper layer). Their dependencies
// are added automatically from each module's depends=; crc32c_generic is
// listed because libcrc32c (erofs) only names it as a soft dependency the
// guest has no modprobe to resolve.
var DefaultModules = []string{
	"virtio_mmio", "virtio_console",
	"9pnet_virtio", "9p",
	"vmw_vsock_virtio_transport",
	"virtio_blk", "crc32c_generic", "erofs", "overlay",
}

// Defaults for the builder.
const (
	// DefaultBaseDir holds one directory per built version.
	DefaultBaseDir = "/var/lib/kuasar/guest"
	// DefaultKernelMeta is the Debian package whose dependency names the
	// versioned kernel package.
	DefaultKernelMeta = "linux-image-amd64"
	// KernelName and InitramfsName are the artifact file names.
	KernelName    = "vmlinux"
	InitramfsName = "initramfs.img"
)

// layoutVersion changes whenever the initramfs layout this package writes
// changes, so cached builds of an older layout are not reused.
const layoutVersion = "2"

// Options configure Build.
type Options struct {
	// BaseDir is where versioned directories are created (DefaultBaseDir).
	BaseDir string
	// CacheDir keeps downloaded .deb files ($HOME/.cache/kuasar-guest).
	CacheDir string
	// KernelDeb is a kernel .deb to use instead of downloading one.
	KernelDeb string
	// KernelPackage is the versioned Debian package to download; when
	// empty it is resolved from DefaultKernelMeta with apt-cache.
	KernelPackage string
	// Modules are the modules to include (DefaultModules when nil).
	Modules []string
	// Agent is a prebuilt static kuasar-task binary; when empty Build runs
	// `go build ./cmd/kuasar-task` in SourceDir.
	Agent string
	// SourceDir is the kuasar module root (the current directory when empty).
	SourceDir string
	// MinimalKernel builds (once, cached) and uses a kernel from Debian's
	// linux-source-6.1 with everything built in (see BuildMinimalKernel)
	// instead of the stock kernel package; Modules is then ignored.
	MinimalKernel bool
	// BuildLog receives the minimal kernel's build output (discarded when nil).
	BuildLog io.Writer
	// Init, when set, replaces the agent as /init (test images).
	Init []byte
	// Files are extra files for the initramfs (path → contents, mode 0755).
	Files map[string][]byte
}

// Artifacts are a built guest.
type Artifacts struct {
	// Dir is the versioned directory.
	Dir string `json:"dir"`
	// Version is Dir's name: kernel release + agent hash.
	Version string `json:"version"`
	// Kernel and Initramfs are the artifact paths.
	Kernel    string `json:"kernel"`
	Initramfs string `json:"initramfs"`
	// KernelRelease is the guest's `uname -r`.
	KernelRelease string `json:"kernel_release"`
	// Modules are the modules in load order.
	Modules []string `json:"modules"`
	// Cached reports that the version already existed.
	Cached bool `json:"cached"`
}

// Build produces (or finds in the cache) the guest kernel and initramfs.
func Build(ctx context.Context, o Options) (Artifacts, error) {
	if o.BaseDir == "" {
		o.BaseDir = DefaultBaseDir
	}
	if o.CacheDir == "" {
		home, _ := os.UserHomeDir()
		o.CacheDir = filepath.Join(home, ".cache", "kuasar-guest")
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return Artifacts{}, err
	}
	var (
		deb string
		mk  MinimalKernel
		err error
	)
	if o.MinimalKernel {
		if o.BuildLog == nil {
			o.BuildLog = io.Discard
		}
		mk, err = BuildMinimalKernel(ctx, o.CacheDir, o.BuildLog)
		if err != nil {
			return Artifacts{}, err
		}
		o.Modules = []string{}
		deb = "minimal-" + filepath.Base(filepath.Dir(mk.Vmlinux))
	} else {
		deb, err = kernelDeb(ctx, o)
		if err != nil {
			return Artifacts{}, err
		}
	}
	initBin := o.Init
	if initBin == nil {
		initBin, err = agentBinary(ctx, o)
		if err != nil {
			return Artifacts{}, err
		}
	}
	h := sha256.New()
	h.Write(initBin)
	fmt.Fprintf(h, "\x00%s\x00%s\x00%s", layoutVersion, filepath.Base(deb), strings.Join(o.Modules, ","))
	for _, k := range sortedKeys(o.Files) {
		fmt.Fprintf(h, "\x00%s\x00", k)
		h.Write(o.Files[k])
	}
	sum := hex.EncodeToString(h.Sum(nil))[:12]

	// Debian names kernel packages linux-image-<release>_<version>_<arch>.deb.
	release := strings.TrimPrefix(strings.SplitN(filepath.Base(deb), "_", 2)[0], "linux-image-")
	if o.MinimalKernel {
		release = mk.Release
	}
	version := release + "-" + sum
	a := Artifacts{
		Dir: filepath.Join(o.BaseDir, version), Version: version,
		KernelRelease: release,
	}
	a.Kernel = filepath.Join(a.Dir, KernelName)
	a.Initramfs = filepath.Join(a.Dir, InitramfsName)
	if b, err := os.ReadFile(filepath.Join(a.Dir, "manifest.json")); err == nil && json.Unmarshal(b, &a) == nil {
		a.Cached = true
		return a, nil
	}

	var vmlinux []byte
	var mods []Module
	if o.MinimalKernel {
		if vmlinux, err = os.ReadFile(mk.Vmlinux); err != nil {
			return a, err
		}
	} else {
		if vmlinux, mods, err = stockKernel(ctx, o, deb, release); err != nil {
			return a, err
		}
	}
	var ird bytes.Buffer
	w := NewCPIOWriter(&ird)
	made := map[string]bool{}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "etc/kuasar", "lib", "lib/modules"} {
		made[d] = true
		w.Dir(d, 0o755)
	}
	var load []string
	for _, m := range mods {
		w.File("lib/modules/"+m.Name+".ko", 0o644, m.Data)
		load = append(load, m.Name+".ko")
		a.Modules = append(a.Modules, m.Name)
	}
	w.File("etc/kuasar/modules.load", 0o644, []byte(strings.Join(load, "\n")+"\n"))
	for _, k := range sortedKeys(o.Files) {
		data := o.Files[k]
		k = strings.TrimPrefix(filepath.Clean("/"+k), "/")
		var parents []string
		for d := filepath.Dir(k); d != "." && d != "/"; d = filepath.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if !made[d] {
				made[d] = true
				w.Dir(d, 0o755)
			}
		}
		w.File(k, 0o755, data)
	}
	w.File("init", 0o755, initBin)
	if err := w.Close(); err != nil {
		return a, err
	}

	if err := os.MkdirAll(o.BaseDir, 0o755); err != nil {
		return a, err
	}
	work, err := os.MkdirTemp(o.BaseDir, ".build-")
	if err != nil {
		return a, err
	}
	defer os.RemoveAll(work)
	man, _ := json.MarshalIndent(a, "", "  ")
	for name, data := range map[string][]byte{KernelName: vmlinux, InitramfsName: ird.Bytes(), "manifest.json": man} {
		if err := os.WriteFile(filepath.Join(work, name), data, 0o644); err != nil {
			return a, err
		}
	}
	if err := os.Chmod(work, 0o755); err != nil {
		return a, err
	}
	if err := os.Rename(work, a.Dir); err != nil {
		if _, serr := os.Stat(filepath.Join(a.Dir, "manifest.json")); serr == nil {
			a.Cached = true // a concurrent build won
			return a, nil
		}
		return a, err
	}
	log.G(ctx).WithField("dir", a.Dir).Info("guest: built kernel and initramfs")
	return a, nil
}

// Link points dir/vmlinux and dir/initramfs.img (the paths the default
// configuration names) at a built version, replacing old links atomically.
func Link(a Artifacts, dir string) error {
	for name, target := range map[string]string{KernelName: a.Kernel, InitramfsName: a.Initramfs} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		_ = os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return nil
}

func sortedKeys(m map[string][]byte) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func kernelDeb(ctx context.Context, o Options) (string, error) {
	if o.KernelDeb != "" {
		return o.KernelDeb, nil
	}
	pkg := o.KernelPackage
	if pkg == "" {
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", DefaultKernelMeta).Output()
		if err != nil {
			return "", fmt.Errorf("apt-cache depends %s: %w (run apt-get update, or pass a kernel .deb): %w", DefaultKernelMeta, err, errdefs.ErrUnavailable)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: "); ok && strings.HasPrefix(v, "linux-image-") {
				pkg = strings.TrimSpace(v)
				break
			}
		}
		if pkg == "" {
			return "", fmt.Errorf("cannot resolve %s to a versioned kernel package: pass one explicitly: %w", DefaultKernelMeta, errdefs.ErrNotFound)
		}
	}
	dir := filepath.Join(o.CacheDir, "debs")
	if m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb")); len(m) > 0 {
		return m[len(m)-1], nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w: %s: %w", pkg, err, out, errdefs.ErrUnavailable)
	}
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(m) == 0 {
		return "", fmt.Errorf("apt-get download %s produced no .deb: %w", pkg, errdefs.ErrNotFound)
	}
	return m[len(m)-1], nil
}

// BuildAgent compiles the static kuasar-task agent from the module at
// srcDir into a temporary file and returns its bytes.
func BuildAgent(ctx context.Context, srcDir string) ([]byte, error) {
	if srcDir == "" {
		srcDir = "."
	}
	tmp, err := os.MkdirTemp("", "kuasar-agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "kuasar-task")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./cmd/kuasar-task")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/kuasar-task in %s: %w: %s", srcDir, err, b)
	}
	return os.ReadFile(out)
}

func agentBinary(ctx context.Context, o Options) ([]byte, error) {
	if o.Agent != "" {
		b, err := os.ReadFile(o.Agent)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("agent binary %s: %w", o.Agent, errdefs.ErrNotFound)
		}
		return b, err
	}
	return BuildAgent(ctx, o.SourceDir)
}

// stockKernel unpacks a Debian kernel package and returns its vmlinux and
// the requested modules (with dependencies) in load order.
func stockKernel(ctx context.Context, o Options, deb, release string) ([]byte, []Module, error) {
	tmp, err := os.MkdirTemp(o.CacheDir, "unpack-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("dpkg-deb -x %s: %w: %s", deb, err, out)
	}
	vmlinuzs, _ := filepath.Glob(filepath.Join(tmp, "boot", "vmlinuz-"+release))
	if len(vmlinuzs) != 1 {
		return nil, nil, fmt.Errorf("%s holds no /boot/vmlinuz-%s (name kernel packages linux-image-<release>_<version>_<arch>.deb): %w", deb, release, errdefs.ErrInvalidArgument)
	}

	bz, err := os.ReadFile(vmlinuzs[0])
	if err != nil {
		return nil, nil, err
	}
	vmlinux, err := ExtractVmlinux(bz)
	if err != nil {
		return nil, nil, err
	}
	mods, err := ResolveModules(filepath.Join(tmp, "lib", "modules", release), o.Modules)
	if err != nil {
		return nil, nil, err
	}
	return vmlinux, mods, nil
}

// Prune removes all but the keep most recently built versions under
// baseDir (directories holding a manifest.json), never the one named
// protect. Running VMs are unaffected: the hypervisor read its kernel and
// initramfs at start.
func Prune(baseDir string, keep int, protect string) error {
	ents, err := os.ReadDir(baseDir)
	if err != nil {
		return err
	}
	type ver struct {
		dir string
		mod int64
	}
	var vs []ver
	for _, e := range ents {
		m := filepath.Join(baseDir, e.Name(), "manifest.json")
		fi, err := os.Stat(m)
		if !e.IsDir() || err != nil {
			continue
		}
		vs = append(vs, ver{filepath.Join(baseDir, e.Name()), fi.ModTime().UnixNano()})
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].mod > vs[j].mod })
	var errs []error
	for i, v := range vs {
		if i < keep || v.dir == protect {
			continue
		}
		if err := os.RemoveAll(v.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
