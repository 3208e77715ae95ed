package quark

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// starterEnv makes TestHelperStarter start a sandbox: "<binary>:<config
// file>:<state dir>".
const starterEnv = "KUASAR_QUARK_TEST_STARTER"

// TestHelperStarter is the process TestCrashBeforeRecord kills: it starts
// a sandbox on the stand-in until the crash point the test chose. It does
// nothing in a normal test run.
func TestHelperStarter(t *testing.T) {
	v := os.Getenv(starterEnv)
	if v == "" {
		t.Skip("helper process of TestCrashBeforeRecord")
	}
	f := strings.SplitN(v, ":", 3)
	sb := backend.Sandbox{ID: "sb-crash", Namespace: "quark-test", StateDir: f[2], Hostname: "qhost"}
	_, err := New(Config{Binary: f[0], ConfigFile: f[1]}).Start(context.Background(), sb)
	t.Fatalf("the starter was not killed at %s (Start returned %v)", os.Getenv(crashpoint.Env), err)
}

// TestCrashBeforeRecord: a process killed between quark's start and the
// record of the sandbox process's pid (quark.started), or right after it
// (quark.recorded), leaves the sandbox process running; it carries the
// state directory as its mark and a record names that directory from
// before the start, so the owner's clean-up (the sandboxer's
// reconciliation, the next `kuasar run`) finds it by the mark and kills
// it. Before, nothing named it: Quark's process ran on for good.
func TestCrashBeforeRecord(t *testing.T) {
	cfg, _ := standin(t)
	for _, point := range []string{"quark.started", "quark.recorded"} {
		t.Run(point, func(t *testing.T) {
			sb := sandbox(t, "sb-crash")
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStarter$", "-test.count=1")
			cmd.Env = append(os.Environ(), starterEnv+"="+cfg.Binary+":"+cfg.ConfigFile+":"+sb.StateDir, crashpoint.Env+"="+point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
				t.Fatalf("the starter was not killed at %s: %v\n%s", point, err, out)
			}
			rec, err := procmark.Read(filepath.Join(sb.StateDir, recordName))
			if err != nil || rec.Owner != sb.StateDir {
				t.Fatalf("record of the sandbox process after the kill: %+v, %v; want one naming %s", rec, err, sb.StateDir)
			}
			if (point == "quark.started") != (rec.Pid == 0) {
				t.Errorf("record at %s holds pid %d", point, rec.Pid)
			}
			procs, err := procmark.Scan(sb.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, p := range procs {
					procmark.Kill(p)
				}
			})
			if len(procs) != 1 || procs[0].Owner != sb.StateDir {
				t.Fatalf("marked processes of the sandbox after the kill: %v; want Quark's sandbox process", procs)
			}
			if rec.Pid != 0 && (rec.Pid != procs[0].Pid || rec.StartTime != procs[0].StartTime) {
				t.Errorf("record %+v does not name the sandbox process %+v", rec, procs[0])
			}
			// The owner's clean-up: what sandboxer/reconcile.go's reapDir
			// does for a directory that holds a record.
			killed, err := procmark.Reap(sb.StateDir)
			if err != nil || len(killed) != 1 {
				t.Fatalf("Reap: %v, %v", killed, err)
			}
			if left, _ := procmark.Scan(sb.StateDir); len(left) != 0 {
				t.Fatalf("still running after Reap: %v", left)
			}
			// Re-attaching finds the sandbox exited.
			inst, err := New(cfg).Recover(context.Background(), sb, nil)
			if err != nil || inst.Pid() != 0 {
				t.Fatalf("Recover after the clean-up: pid %d, %v; want an exited sandbox", inst.Pid(), err)
			}
		})
	}
}

// TestHungTaskSocket: a Quark whose task socket accepts connections and
// never answers fails Start after probeAttempts probes of probeTimeout
// each, although neither the caller's context nor the start timeout (an
// hour here) would end it; the error names the hang, and no process,
// socket or record is left.
func TestHungTaskSocket(t *testing.T) {
	cfg, _ := standin(t)
	t.Setenv(muteEnvForTest, "1")
	sb := sandbox(t, "sb-hung")
	done := make(chan error, 1)
	go func() {
		inst, err := New(cfg, WithStartTimeout(time.Hour)).Start(context.Background(), sb)
		if err == nil {
			inst.Shutdown(context.Background())
		}
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Minute):
		t.Fatal("Start against a hung task socket did not return within 5 minutes: no probe deadline")
	}
	if err == nil || !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "answered none of") {
		t.Fatalf("Start: %v; want Unavailable saying no probe was answered", err)
	}
	if left, _ := procmark.Scan(sb.StateDir); len(left) != 0 {
		t.Errorf("processes left: %v", left)
	}
	for _, name := range []string{socketName, recordName} {
		if _, err := os.Lstat(filepath.Join(sb.StateDir, name)); !os.IsNotExist(err) {
			t.Errorf("%s left after the failed start: %v", name, err)
		}
	}
}

// muteEnvForTest is the stand-in's switch to a hung task socket
// (quark/internal/standin).
const muteEnvForTest = "QUARK_STANDIN_MUTE"
