package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// PauseImage is the image CRI runs as the pause container of runc pods
// (containerd v2.4.2's default sandbox image).
const PauseImage = "registry.k8s.io/pause:3.10.2"

// Env is a containerd plus a kuasar-sandboxer wired together in one
// temporary directory.
type Env struct {
	T     testing.TB
	Dir   string
	Tools Tools
	// Bin holds kuasar-sandboxer and containerd-shim-kuasar-v1.
	Bin string

	ContainerdSock, ContainerdTTRPC string
	SandboxerSock, SandboxerState   string
	// SandboxerDebug serves /debug/pprof of the sandboxer.
	SandboxerDebug string
	// SandboxerConfig is the sandboxer's config file.
	SandboxerConfig string

	Containerd *Process
	Sandboxer  *Process
	// SandboxerEnv is added to the sandboxer's environment at each
	// (re)start, e.g. a crash point (internal/crashpoint).
	SandboxerEnv []string

	// sandboxerNoFile is the sandboxer's RLIMIT_NOFILE; 0 inherits ours.
	sandboxerNoFile uint64
}

// EnvOption configures NewEnv.
type EnvOption func(*envOptions)

type envOptions struct {
	sandboxerConfig string
	sandboxerNoFile uint64
}

// WithSandboxerConfig appends TOML to the sandboxer's configuration file
// (for example [hypervisor.qemu] paths).
func WithSandboxerConfig(toml string) EnvOption {
	return func(o *envOptions) { o.sandboxerConfig += "\n" + toml }
}

// WithSandboxerOpenFiles starts the sandboxer with RLIMIT_NOFILE n (soft
// and hard), so that a test of its open-file budget exhausts a known,
// small limit rather than whatever the machine allows.
func WithSandboxerOpenFiles(n uint64) EnvOption {
	return func(o *envOptions) { o.sandboxerNoFile = n }
}

// NewEnv starts kuasar-sandboxer and containerd (with the kuasar proxy
// sandboxer, the kuasar runtime handler and the stock runc handler).
func NewEnv(t testing.TB, opts ...EnvOption) *Env {
	t.Helper()
	RequireRoot(t)
	var o envOptions
	for _, opt := range opts {
		opt(&o)
	}
	e := &Env{T: t, Tools: FindTools(t), Bin: Binaries(t), Dir: TempDir(t), sandboxerNoFile: o.sandboxerNoFile}
	e.ContainerdSock = filepath.Join(e.Dir, "c.sock")
	e.ContainerdTTRPC = filepath.Join(e.Dir, "c.sock.ttrpc")
	e.SandboxerSock = filepath.Join(e.Dir, "k.sock")
	e.SandboxerState = stateDir(t)
	e.SandboxerDebug = filepath.Join(e.Dir, "kdebug.sock")
	e.SandboxerConfig = filepath.Join(e.Dir, "kuasar.toml")
	kcfg := fmt.Sprintf(`[sandboxer]
containerd_address = %q
containerd_ttrpc_address = %q
log_level = "debug"
[wasm]
cache_dir = ""
`, e.ContainerdSock, e.ContainerdTTRPC) + o.sandboxerConfig
	if err := os.WriteFile(e.SandboxerConfig, []byte(kcfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartSandboxer()
	e.startContainerd()
	return e
}

// stateDir is the sandboxer's state directory: on tmpfs (/dev/shm) when the
// machine has one, as /run is on a real host, else under the test directory.
func stateDir(t testing.TB) string {
	d, err := os.MkdirTemp("/dev/shm", "ks")
	if err != nil {
		return filepath.Join(TempDir(t), "k")
	}
	t.Cleanup(func() {
		removeTemplates(t, filepath.Join(d, "vm-templates"))
		unmountUnder(d)
		os.RemoveAll(d)
	})
	return d
}

// removeTemplates removes the VM templates the sandboxer kept in dir
// (its "vm-templates" state), with their memory, which lives on
// /dev/shm outside the state directory. The sandboxer is stopped by
// then (its clean-up runs first).
func removeTemplates(t testing.TB, dir string) {
	ctx := context.Background()
	b, err := vmbackend.New(ctx, vmbackend.WithTemplateDir(dir), vmbackend.WithoutPool())
	if err == nil {
		err = b.RemoveTemplates(ctx)
	}
	if err != nil {
		t.Errorf("remove the sandboxer's VM templates in %s: %v", dir, err)
	}
}

// StartSandboxer starts (or restarts) kuasar-sandboxer and waits for its socket.
func (e *Env) StartSandboxer() {
	t := e.T
	t.Helper()
	os.Remove(e.SandboxerSock)
	bin, args := filepath.Join(e.Bin, "kuasar-sandboxer"), []string(nil)
	if e.sandboxerNoFile > 0 {
		// util-linux's prlimit sets the limit and execs the sandboxer
		// (same pid). Lowering our own limit around the fork would not
		// do: without CAP_SYS_RESOURCE it cannot be raised back.
		p, err := exec.LookPath("prlimit")
		if err != nil {
			t.Fatalf("WithSandboxerOpenFiles needs prlimit (util-linux): %v", err)
		}
		bin, args = p, []string{fmt.Sprintf("--nofile=%d:%d", e.sandboxerNoFile, e.sandboxerNoFile), "--", bin}
	}
	e.Sandboxer = Start(t, e.SandboxerEnv, bin, append(args,
		"--config", e.SandboxerConfig, "--listen", e.SandboxerSock, "--state-dir", e.SandboxerState,
		"--debug-listen", e.SandboxerDebug)...)
	WaitSocket(t, e.SandboxerSock, 20*time.Second, e.Sandboxer)
}

func (e *Env) startContainerd() {
	t := e.T
	t.Helper()
	// The shipped snippet (configs/containerd-config.toml) is used as is,
	// with its paths pointed into the test directory, so the tests check
	// what users install.
	cfg := configs.PrivateContainerd{Dir: e.Dir, GRPC: e.ContainerdSock, TTRPC: e.ContainerdTTRPC, Sandboxer: e.SandboxerSock, Runc: true}.Config()
	p := filepath.Join(e.Dir, "containerd.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	path := e.Bin + ":" + os.Getenv("PATH")
	if e.Tools.RuncShim != "" {
		path = filepath.Dir(e.Tools.RuncShim) + ":" + path
	}
	env := []string{"PATH=" + path}
	e.Containerd = Start(t, env, e.Tools.Containerd, "--config", p, "--log-level", "info")
	WaitSocket(t, e.ContainerdSock, 20*time.Second, e.Containerd)
	t.Cleanup(e.cleanupContainerd)
}

// cleanupContainerd removes every pod CRI still has so that the sandboxer
// shuts their sandboxes down before it is stopped.
func (e *Env) cleanupContainerd() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := RunErr(ctx, e.Tools.Crictl, e.crictlArgs("pods", "-q")...)
	for _, id := range strings.Fields(out) {
		RunErr(ctx, e.Tools.Crictl, e.crictlArgs("stopp", id)...)
		RunErr(ctx, e.Tools.Crictl, e.crictlArgs("rmp", "-f", id)...)
	}
}

func (e *Env) crictlArgs(args ...string) []string {
	return append([]string{"--runtime-endpoint", "unix://" + e.ContainerdSock, "--image-endpoint", "unix://" + e.ContainerdSock, "--timeout", "60s"}, args...)
}

// Crictl runs crictl against the env's containerd, failing the test on error.
func (e *Env) Crictl(args ...string) string {
	e.T.Helper()
	return strings.TrimSpace(Run(e.T, nil, e.Tools.Crictl, e.crictlArgs(args...)...))
}

// CrictlErr runs crictl and returns its output and error.
func (e *Env) CrictlErr(args ...string) (string, error) {
	out, err := RunErr(nil, e.Tools.Crictl, e.crictlArgs(args...)...)
	return strings.TrimSpace(out), err
}

// Ctr runs ctr against the env's containerd in namespace k8s.io.
func (e *Env) Ctr(args ...string) string {
	e.T.Helper()
	return Run(e.T, nil, e.Tools.Ctr, append([]string{"-a", e.ContainerdSock, "-n", "k8s.io"}, args...)...)
}

// ImportImage writes img as an OCI archive named ref and imports it into
// containerd's k8s.io namespace, unpacked for the host platform.
func (e *Env) ImportImage(img *images.MemoryImage, ref string) {
	e.T.Helper()
	e.ImportImagePlatform(img, ref, "")
}

// ImportImagePlatform imports img and unpacks it for platform (e.g.
// "wasi/wasm"): CRI only unpacks images for the host platform by itself, so
// Wasm images must be unpacked at import.
func (e *Env) ImportImagePlatform(img *images.MemoryImage, ref, platform string) {
	e.T.Helper()
	p := filepath.Join(e.Dir, "img-"+strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	if err := img.WriteArchiveFile(p, ref); err != nil {
		e.T.Fatal(err)
	}
	defer os.Remove(p)
	args := []string{"images", "import"}
	if platform != "" {
		args = append(args, "--platform", platform)
	}
	e.Ctr(append(args, p)...)
}

// RequireRuncShim fails the test when containerd-shim-runc-v2 is missing.
func (e *Env) RequireRuncShim() {
	e.T.Helper()
	if e.Tools.RuncShim == "" {
		e.T.Fatalf("containerd-shim-runc-v2 %s is missing under %s: run make deps (go install github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@%s)",
			ContainerdVersion, ToolsDir(), ContainerdVersion)
	}
}

// ImportPause builds the pause image from busybox-static and imports it.
func (e *Env) ImportPause() {
	e.T.Helper()
	img := BusyboxImage(e.T, []string{"/bin/sleep", "2147483647"})
	e.ImportImage(img, PauseImage)
}

// BusyboxPath is Debian's busybox-static binary.
const BusyboxPath = "/bin/busybox"

// BusyboxImage builds a Linux image of busybox-static with the given
// entrypoint.
func BusyboxImage(t testing.TB, entrypoint []string) *images.MemoryImage {
	t.Helper()
	files, err := images.BusyboxFiles(BusyboxPath, "sh", "sleep", "echo", "cat", "uname", "hostname")
	if err != nil {
		t.Fatalf("%v: apt-get install busybox-static (make deps)", err)
	}
	img, err := images.BuildLinuxImage(context.Background(), files, imageConfig(entrypoint), platformHost())
	if err != nil {
		t.Fatal(err)
	}
	return img
}
