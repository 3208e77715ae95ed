package vmbackend_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// TestStalledVMMFailsFast stops (SIGSTOP) a real QEMU while Start waits
// for a guest agent: its monitor still accepts connections but answers
// nothing. Start must give up on the health probes' own deadlines, long
// before the 90 s agent timeout (the test's context), with an Unavailable
// error naming the sandbox, the probe and the console log, and leave no
// QEMU, socket or state behind.
func TestStalledVMMFailsFast(t *testing.T) {
	testenv.RequireRoot(t)
	// The agent never answers, so only the health probes can end the wait.
	a := testenv.BusyboxInit(t, "echo kuasar-probe-ready > /dev/console; /bin/busybox sleep 3600")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // far beyond the probes' deadlines, which must end Start
	defer cancel()
	b := qemuBackend(t, ctx, qemuConfig(t, a), vmbackend.WithAgentTimeout(10*time.Minute))
	state := t.TempDir()
	id := "stalled-vmm"
	console := filepath.Join(state, "vm", "console.log")
	stopped := make(chan int, 1)
	var stoppedAt time.Time
	go func() {
		// Stop QEMU once the guest has printed its marker: by then
		// Start has connected QMP and is waiting for the agent.
		for ctx.Err() == nil {
			if b, _ := os.ReadFile(console); bytes.Contains(b, []byte("kuasar-probe-ready")) {
				if pids := qemuPids(state); len(pids) == 1 {
					_ = syscall.Kill(pids[0], syscall.SIGSTOP)
					stoppedAt = time.Now()
					stopped <- pids[0]
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	_, err := b.Start(ctx, backend.Sandbox{ID: id, StateDir: state})
	t.Logf("Start failed after %v: %v", time.Since(start), err)
	if err == nil {
		t.Fatal("Start succeeded with a stopped VMM and no agent")
	}
	select {
	case pid := <-stopped:
		t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
		t.Logf("Start failed %v after QEMU was stopped", time.Since(stoppedAt))
	default:
		t.Fatalf("Start failed before QEMU was stopped: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Start waited for the caller's deadline: %v", err)
	}
	if !errors.Is(err, errdefs.ErrUnavailable) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("error %q: want Unavailable from a probe deadline", err)
	}
	for _, want := range []string{id, "query-status", "did not answer", console} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if got := qemuPids(state); len(got) != 0 {
		t.Errorf("qemu left running: %v", got)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("state left: %v", ents)
	}
}
