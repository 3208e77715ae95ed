package sandboxer

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

			// The watch of a re-attached sandbox learns of its exit
			// only after the reconciliation (it is a goroutine the
			// scheduler may run late): the exit a recovered instance
			// reports at once must count all the same.
			h.vmWaitGate = make(chan struct{})
			t.Cleanup(func() { close(h.vmWaitGate) })
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

// TestRestartAdoptedProcesses: a VM clone made ahead of need (the VM
// backend's warm pool, <base>/b/p-*) is marked with its pool directory
// and, once a sandbox adopts it, recorded in that sandbox's directory. A
// restart spares it while its sandbox runs, kills it when its sandbox's
// directory is reaped, and reaps idle clones (no sandbox) with their
// directories. Before, a clone adopted by a live sandbox was killed as a
// process of no running sandbox, and one of a reaped sandbox survived.
func TestRestartAdoptedProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reads other processes' environment")
	}
	h := newHarness(t, "")
	h.createStart(context.Background(), "live", map[string]string{AnnotationIsolation: "vm"})
	root := h.svc.store.backendsRoot()
	live := plantVMM(t, h.svc.store.backendDir("live"), filepath.Join(root, "p-00000000000001", "vm"))
	orphan := plantVMM(t, h.svc.store.backendDir("norecord"), filepath.Join(root, "p-00000000000002", "vm"))
	idleDir := filepath.Join(root, "p-00000000000003")
	idle := plantVMM(t, idleDir, filepath.Join(idleDir, "vm"))
	// A record in a directory a VMM's group may write (as a confined
	// VMM's own state directory) naming a foreign mark is not honoured:
	// a compromised VMM of a sandbox being reaped forges one naming the
	// running sandbox's adopted clone.
	forgedDir := filepath.Join(h.svc.store.backendDir("forged"), "vm")
	rec, err := procmark.Read(filepath.Join(h.svc.store.backendDir("live"), "vm", "vmm"+procmark.RecordExt))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(forgedDir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(forgedDir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := procmark.Write(filepath.Join(forgedDir, "vmm"+procmark.RecordExt), rec); err != nil {
		t.Fatal(err)
	}

	h.vmRecoverLive = true
	h.restart()
	if !killedWithin(orphan, 10*time.Second) {
		t.Error("the adopted clone of a sandbox without a record still runs after the restart")
	}
	if !killedWithin(idle, 10*time.Second) {
		t.Error("an idle pool clone still runs after the restart")
	}
	if _, err := os.Lstat(idleDir); !os.IsNotExist(err) {
		t.Errorf("idle pool clone directory %s left: %v", idleDir, err)
	}
	// Kills are synchronous (procmark.Kill waits for the exit): a killed
	// process is a zombie now, until the test reaps it.
	if gone(t, h.svc.store.backendDir("live")) {
		t.Fatal("the adopted clone of a running sandbox was killed at the restart (or through a record forged in a VMM-writable directory)")
	}

	// Its sandbox's removal takes it.
	ctx := context.Background()
	if _, err := h.client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "live"}); err != nil {
		t.Fatal(err)
	}
	if !killedWithin(live, 10*time.Second) {
		t.Fatal("Shutdown left the adopted clone of the sandbox running")
	}
}

// gone reports whether the process recorded in dir/vm has exited (it may
// still be a zombie the test has not reaped).
func gone(t *testing.T, dir string) bool {
	t.Helper()
	r, err := procmark.Read(filepath.Join(dir, "vm", "vmm"+procmark.RecordExt))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(r.Pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || len(b) < i+3 || b[i+2] == 'Z'
}
