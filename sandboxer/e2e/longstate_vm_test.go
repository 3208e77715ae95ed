package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestVMLongStateDir boots a QEMU sandbox through the sandboxer under a
// 120-byte state directory and a containerd-style 64-hex ID: the task
// socket and QEMU's own sockets (QMP, agent channel) must fit the unix
// limit and work (the agent answered, or Start would fail), and Shutdown
// must leave no QEMU, socket or directory behind.
func TestVMLongStateDir(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	testenv.RequireRoot(t)
	cfg, err := config.Parse([]byte(qemuConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "k8s.io"), 3*time.Minute)
	defer cancel()
	vc := vmbackend.DefaultConfig()
	if err := cfg.Section(vmbackend.ConfigSection).Decode(&vc); err != nil {
		t.Fatal(err)
	}
	vb, err := vmbackend.New(ctx, vmbackend.WithHypervisor(vm.QEMU, vc.QEMU), vmbackend.WithDefaultHypervisor(vm.QEMU))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := dir + "/" + strings.Repeat("v", 120-len(dir)-1)
	svc, err := sandboxer.New(ctx, sandboxer.WithConfig(cfg), sandboxer.WithStateDir(state), sandboxer.WithBackend(vb))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	base := svc.SocketsDir()
	if base == state {
		t.Fatalf("sockets kept under the %d-byte state dir", len(state))
	}
	t.Cleanup(func() {
		os.RemoveAll(base)
		os.Remove(filepath.Dir(base))
	})
	id := strings.Repeat("0123456789abcdef", 4)
	if _, err := svc.Create(ctx, &api.ControllerCreateRequest{SandboxID: id, Annotations: map[string]string{sandboxer.AnnotationIsolation: "vm"}}); err != nil {
		t.Fatal(err)
	}
	st, err := svc.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil {
		svc.Shutdown(context.WithoutCancel(ctx), &api.ControllerShutdownRequest{SandboxID: id})
		t.Fatalf("VM sandbox under a 120-byte state dir: %v", err)
	}
	socks, _ := filepath.Glob(filepath.Join(base, "b", "*", "vm", "*.sock"))
	socks = append(socks, strings.TrimPrefix(st.Address, "ttrpc+unix://"))
	if len(socks) < 3 {
		t.Fatalf("sockets %v: want the task socket, QMP and the agent channel", socks)
	}
	for _, s := range socks {
		if len(s) > 107 {
			t.Fatalf("socket %s is %d bytes", s, len(s))
		}
	}
	c, err := net.Dial("unix", socks[len(socks)-1])
	if err != nil {
		t.Fatalf("task socket: %v", err)
	}
	c.Close()
	if _, err := svc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("socket %s left after Shutdown: %v", s, err)
		}
	}
	for _, sub := range []string{"s", "b"} {
		if ents, _ := os.ReadDir(filepath.Join(base, sub)); len(ents) != 0 {
			t.Errorf("%s/%s holds %v after Shutdown", base, sub, ents)
		}
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu.*kuasar-"+id).Output(); len(out) != 0 {
		t.Fatalf("QEMU left after Shutdown: %s", out)
	}
}
