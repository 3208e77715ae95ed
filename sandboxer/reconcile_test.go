package sandboxer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// plantVMM starts a stand-in for a VMM (sleep) marked and recorded as owned
// by dir/vm, as vm/internal/vmm does, and returns a channel that receives
// how it ended.
func plantVMM(t *testing.T, dir, owner string) <-chan *os.ProcessState {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "vm"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "600")
	cmd.Env = []string{procmark.Pair(owner)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := procmark.StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	rec := procmark.Record{Owner: owner, Path: "sleep", Pid: cmd.Process.Pid, StartTime: st}
	if err := procmark.Write(filepath.Join(dir, "vm", "vmm"+procmark.RecordExt), rec); err != nil {
		t.Fatal(err)
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		cmd.Wait()
		done <- cmd.ProcessState
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return done
}

// killedWithin reports whether the planted process was SIGKILLed within d.
func killedWithin(done <-chan *os.ProcessState, d time.Duration) bool {
	select {
	case ps := <-done:
		ws, ok := ps.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	case <-time.After(d):
		return false
	}
}

// TestRestartReapsInterruptedBackends kills the sandboxer (a restart on
// the same state) while a VMM it started is running but not yet owned by
// a record that says so, in each way that can happen, and checks that the
// restarted sandboxer kills the VMM and removes its directory; the record,
// if any, stays for containerd to stop and remove. Before: a CREATED
// record was left alone at restart, Shutdown removed the directory, and
// the VMM kept running forever.
func TestRestartReapsInterruptedBackends(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *harness) string // returns the sandbox ID
		state string                  // the record's state after the restart; "" for none
		// kept: the backend directory stays until Shutdown (an exited
		// backend still owns it).
		kept bool
	}{
		{"killed during a VM pod's boot (record CREATED)", func(h *harness) string {
			if _, err := h.client.Create(context.Background(), &api.ControllerCreateRequest{SandboxID: "boot"}); err != nil {
				t.Fatal(err)
			}
			return "boot"
		}, stateCreated, false},
		{"killed while the first container started the VM (record READY, no backend)", func(h *harness) string {
			h.createStart(context.Background(), "lazy", nil)
			return "lazy"
		}, stateReady, false},
		{"killed before the record was written", func(h *harness) string { return "norecord" }, "", false},
		{"recorded backend found exited", func(h *harness) string {
			h.createStart(context.Background(), "dead", map[string]string{AnnotationIsolation: "vm"})
			return "dead"
		}, stateNotRdy, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 {
				t.Skip("reads other processes' environment")
			}
			h := newHarness(t, "")
			ctx := context.Background()
			id := tc.setup(h)
			dir := h.svc.store.backendDir(id)
			vmm := plantVMM(t, dir, filepath.Join(dir, "vm"))
			// A process marked by someone else (another state
			// directory) must survive.
			other := t.TempDir()
			bystander := plantVMM(t, other, filepath.Join(other, "vm"))

			h.restart()
			if !killedWithin(vmm, 10*time.Second) {
				t.Fatal("the VMM of the interrupted start still runs after the restart")
			}
			if killedWithin(bystander, 0) {
				t.Fatal("a process marked for another state directory was killed")
			}
			if _, err := os.Lstat(dir); !tc.kept && !os.IsNotExist(err) {
				t.Fatalf("backend directory %s left: %v", dir, err)
			}
			st, err := h.client.Status(ctx, &api.ControllerStatusRequest{SandboxID: id, Verbose: true})
			if tc.state == "" {
				if err == nil {
					t.Fatalf("a sandbox without a record is known: %+v", st)
				}
				return
			}
			if err != nil || st.State != tc.state {
				t.Fatalf("status after restart: %+v %v; want %s", st, err, tc.state)
			}
			if _, err := h.client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
				t.Fatal(err)
			}
			if ents, _ := os.ReadDir(filepath.Join(h.svc.StateDir(), "sandboxes")); len(ents) != 0 {
				t.Fatalf("records left after Shutdown: %v", ents)
			}
			if _, err := os.Lstat(dir); !os.IsNotExist(err) {
				t.Fatalf("backend directory %s left after Shutdown: %v", dir, err)
			}
		})
	}
}

// TestShutdownReapsOwnedProcesses: Shutdown of a sandbox whose record
// knows no backend (its start was interrupted) still kills what its
// directory owns before removing it.
func TestShutdownReapsOwnedProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reads other processes' environment")
	}
	h := newHarness(t, "")
	ctx := context.Background()
	if _, err := h.client.Create(ctx, &api.ControllerCreateRequest{SandboxID: "s"}); err != nil {
		t.Fatal(err)
	}
	dir := h.svc.store.backendDir("s")
	vmm := plantVMM(t, dir, filepath.Join(dir, "vm"))
	if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "s"}); err != nil {
		t.Fatal(err)
	}
	if !killedWithin(vmm, 10*time.Second) {
		t.Fatal("Shutdown left the VMM of the sandbox running")
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("backend directory %s left: %v", dir, err)
	}
}
