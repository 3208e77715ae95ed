package vmbackend_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestForcedKVMOnPVMFailsFast forces accel = "kvm" where KVM is nested
// through PVM. Depending on the CPU model QEMU either dies at start-up
// (with -cpu host: "failed to set MSR") or the guest dies in QEMU's
// internal-error state without QEMU exiting (noticed over QMP). Either way
// Start must fail well before the agent timeout with an Unavailable error
// that says to set accel = "tcg", and leave no QEMU behind. On hosts where
// KVM works the sandbox simply starts.
func TestForcedKVMOnPVMFailsFast(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	a := agentGuest(t)
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"cpu-host", nil},
		{"cpu-qemu64", []string{"-cpu", "qemu64"}}, // the last -cpu wins
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := qemuConfig(t, a)
			cfg.Accel = qemu.AccelKVM
			cfg.ExtraArgs = tc.extra
			forcedKVM(t, cfg)
		})
	}
}

func forcedKVM(t *testing.T, cfg vm.Config) {
	ctx := context.Background()
	// The agent timeout is far away: only the start-up failure or the
	// internal-error probe can end Start, which the error tells (not a
	// wall time: under load the guest takes longer to reach its fault).
	b := qemuBackend(t, ctx, cfg, vmbackend.WithAgentTimeout(10*time.Minute))
	state := t.TempDir()
	start := time.Now()
	inst, err := b.Start(ctx, backend.Sandbox{ID: "forced-kvm", StateDir: state})
	el := time.Since(start)
	t.Logf("after %v: %v", el, err)
	if auto, _ := qemu.DetectAccel(ctx); auto == qemu.AccelKVM {
		if err != nil {
			t.Fatalf("KVM works here but Start failed: %v", err)
		}
		inst.Shutdown(ctx)
		return
	}
	if err == nil {
		inst.Shutdown(ctx)
		t.Skip("KVM unexpectedly worked with a stock kernel on this PVM host")
	}
	if !strings.Contains(err.Error(), `accel = "tcg"`) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("error %q: want Unavailable saying to set accel = \"tcg\"", err)
	}
	if strings.Contains(err.Error(), "did not answer within") {
		t.Errorf("error %q: the agent timeout ended Start, not the internal-error state", err)
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu left: %v", got)
	}
}
