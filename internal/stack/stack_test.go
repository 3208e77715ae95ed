package stack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// binaries builds kuasar-sandboxer and containerd-shim-kuasar-v1 into a
// temporary directory removed when t ends.
func binaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/kuasar-sandboxer", "./cmd/containerd-shim-kuasar-v1")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

func requireStack(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containerd and crictl; -short runs unit tests only")
	}
	if os.Geteuid() != 0 {
		t.Skip("a private containerd needs root")
	}
}

// TestWasmPodLeavesNothing starts a stack, runs a Wasm pod through crictl
// on the "kuasar" handler, checks its output and exit code, then closes
// the stack and checks that none of its processes, mounts or files remain.
func TestWasmPodLeavesNothing(t *testing.T) {
	requireStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{BinDir: binaries(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{s.ContainerdSock, s.ContainerdTTRPC, s.SandboxerSock, s.SandboxerState} {
		if !strings.HasPrefix(p, s.Dir+"/") {
			t.Errorf("%s is outside the stack's directory %s", p, s.Dir)
		}
	}
	img, err := images.BuildWasmImage(ctx, fixtures.WASI, "wasi.wasm")
	if err != nil {
		t.Fatal(err)
	}
	const ref = "docker.io/library/stack-wasi:test"
	if err := s.ImportImage(ctx, img, ref, "wasi/wasm"); err != nil {
		t.Fatal(err)
	}
	res, err := s.RunPod(ctx, Pod{Name: "wasi", Handler: HandlerWasm, Image: ref, Args: []string{"exit", "3"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs())
	}
	if res.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", res.ExitCode)
	}
	res, err = s.RunPod(ctx, Pod{Name: "args", Handler: HandlerWasm, Image: ref, Args: []string{"args", "one", "two"}})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs())
	}
	if res.ExitCode != 0 || !strings.Contains(res.Logs, "one") || !strings.Contains(res.Logs, "two") {
		t.Errorf("exit code %d, logs %q: want 0 and the arguments", res.ExitCode, res.Logs)
	}
	if socks := boundSockets(s.Dir); !slices.Contains(socks, s.ContainerdSock) || !slices.Contains(socks, s.SandboxerSock) {
		t.Errorf("bound sockets %v lack containerd's and the sandboxer's: the leak check below would prove nothing", socks)
	}
	if out, err := s.Crictl(ctx, "pods", "-q"); err != nil || out != "" {
		t.Errorf("pods after RunPod: %q %v; want none", out, err)
	}
	cpid, spid := s.ContainerdPid(), s.SandboxerPid()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, s, cpid, spid)
}

// checkNothingLeft fails t if the daemons, any process of the stack, a
// mount under its directory or the directory itself remain.
func checkNothingLeft(t *testing.T, s *Stack, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
			t.Errorf("daemon %d still runs after Close", pid)
		}
	}
	if socks := boundSockets(s.Dir); len(socks) != 0 {
		t.Errorf("unix sockets still bound under %s: %v", s.Dir, socks)
	}
	if ps := s.Processes(); len(ps) != 0 {
		t.Errorf("processes left: %v", ps)
	}
	if _, err := os.Stat(templateMemDir(s.SandboxerState)); !os.IsNotExist(err) {
		t.Errorf("VM template memory %s left (%v)", templateMemDir(s.SandboxerState), err)
	}
	if ms := MountsUnder(s.Dir); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Close (%v)", s.Dir, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// templateMemDir is where the VM backend keeps the memory files of the
// templates of a sandboxer whose state directory is state, as
// vmbackend.WithTemplateDir lays it out: on /dev/shm, outside the stack.
func templateMemDir(state string) string {
	h := sha256.Sum256([]byte(filepath.Join(state, "vm-templates")))
	return filepath.Join("/dev/shm", "kuasar-vm-templates", hex.EncodeToString(h[:8]))
}

// TestVMPodWithTemplateLeavesNothing runs a VM pod (handler kuasar-vm)
// with VM templates on: the sandboxer builds a template whose memory lives
// on /dev/shm, outside the stack's directory; Close removes it with the
// rest.
func TestVMPodWithTemplateLeavesNothing(t *testing.T) {
	requireStack(t)
	if _, err := os.Stat("/var/lib/kuasar/vmlinux"); err != nil {
		t.Fatalf("the guest kernel is missing: run make guest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{BinDir: binaries(t), VMTemplates: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	files, err := images.BusyboxFiles("/bin/busybox", "sh", "echo")
	if err != nil {
		t.Fatalf("%v: make deps", err)
	}
	img, err := images.BuildLinuxImage(ctx, files, ocispec.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}}, ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	const ref = "docker.io/library/stack-busybox:test"
	if err := s.ImportImage(ctx, img, ref, ""); err != nil {
		t.Fatal(err)
	}
	res, err := s.RunPod(ctx, Pod{Name: "vm", Handler: HandlerVM, Image: ref, Args: []string{"echo in-vm; exit 5"}, Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("%v\n%s", err, s.Logs())
	}
	if res.ExitCode != 5 || res.Logs != "in-vm\n" {
		t.Errorf("exit code %d, logs %q; want 5 and in-vm", res.ExitCode, res.Logs)
	}
	if _, err := os.Stat(templateMemDir(s.SandboxerState)); err != nil {
		t.Errorf("no VM template memory at %s (%v): the test no longer checks that Close removes it", templateMemDir(s.SandboxerState), err)
	}
	cpid, spid := s.ContainerdPid(), s.SandboxerPid()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkNothingLeft(t, s, cpid, spid)
}

// boundSockets lists the unix sockets bound under dir that some process
// still holds (/proc/net/unix keeps a socket's path after its file is
// removed).
func boundSockets(dir string) []string {
	b, _ := os.ReadFile("/proc/net/unix")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[7], dir+"/") {
			out = append(out, f[7])
		}
	}
	return out
}
