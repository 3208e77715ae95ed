package stack

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
	if ps := s.Processes(); len(ps) != 0 {
		t.Errorf("processes left: %v", ps)
	}
	if ms := MountsUnder(s.Dir); len(ms) != 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Close (%v)", s.Dir, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
