package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/vm"
)

// FakeVMMSpec is the spec of a VM whose hypervisor binary, kernel and
// initramfs are this test binary, for driver tests that re-execute it as
// a fake VMM: env is set to "1" for the test (and so for the child),
// which the test package's TestMain checks to serve instead of testing.
// The share mode is block, so no virtiofsd is needed.
func FakeVMMSpec(t *testing.T, env, stateDir string) vm.Spec {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(env, "1")
	return vm.Spec{ID: "life", StateDir: stateDir, Config: vm.Config{
		Path: self, Kernel: self, Initramfs: self, RootfsMode: vm.ShareBlock,
	}}
}

// Healthy is a driver that reports the guest's health.
type Healthy interface {
	vm.Hypervisor
	// Health reports an error when the guest cannot make progress.
	Health(ctx context.Context) error
}

// StartHealthy starts h and checks it has a VMM pid and reports healthy.
// It returns a context bounding the rest of the test to 20 s.
func StartHealthy(t *testing.T, h Healthy) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if h.Pid() == 0 {
		t.Fatal("no VMM pid after Start")
	}
	if err := h.Health(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// NoSockets fails the test when a unix socket is left in stateDir.
func NoSockets(t *testing.T, stateDir string) {
	t.Helper()
	if socks, _ := filepath.Glob(filepath.Join(stateDir, "*.sock")); len(socks) != 0 {
		t.Errorf("sockets left: %v", socks)
	}
}
