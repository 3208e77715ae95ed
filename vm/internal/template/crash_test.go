package template

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// builderEnv runs TestHelperBuilder as a builder: "<store dir>:<mem dir>".
const builderEnv = "KUASAR_TEMPLATE_TEST_BUILDER"

// TestHelperBuilder is the builder process TestReapDeadBuilder kills: it
// builds a template whose "VMM" (sleep, marked and recorded in the work
// directory as vm/internal/vmm does) runs until the build hits the crash
// point the test chose. It does nothing in a normal test run.
func TestHelperBuilder(t *testing.T) {
	v := os.Getenv(builderEnv)
	if v == "" {
		t.Skip("helper process of TestReapDeadBuilder")
	}
	dir, mem, _ := strings.Cut(v, ":")
	s := NewStore(dir, mem)
	_, err := s.Get(context.Background(), helperKey(), func(ctx context.Context, key Key, m, state string) error {
		vmDir := filepath.Join(WorkDir(ctx), "vm")
		if err := os.Mkdir(vmDir, 0o700); err != nil {
			return err
		}
		rec := filepath.Join(vmDir, "vmm"+procmark.RecordExt)
		if err := procmark.Write(rec, procmark.Record{Owner: vmDir, Path: "sleep"}); err != nil {
			return err
		}
		cmd := exec.Command("sleep", "600")
		cmd.Env = []string{procmark.Pair(vmDir)}
		if err := cmd.Start(); err != nil {
			return err
		}
		crashpoint.Hit("test.vmm-running")
		if err := os.Truncate(m, int64(key.MemoryMB)<<20); err != nil {
			return err
		}
		if err := os.WriteFile(state, []byte("device state"), 0o600); err != nil {
			return err
		}
		crashpoint.Hit("test.vmm-saved")
		cmd.Process.Kill()
		cmd.Wait()
		return nil
	})
	t.Fatalf("the builder was not killed at %s (Get returned %v)", os.Getenv(crashpoint.Env), err)
}

// helperKey is a key whose files need not exist (Identify is not called).
func helperKey() Key { return Key{VMM: "qemu", Cmdline: "crash test", VCPUs: 1, MemoryMB: 2} }

// TestReapDeadBuilder: a process SIGKILLed at every phase of a template
// build leaves its "VMM" running and its files in the store; Reap (what a
// restarted sandboxer or the next `kuasar run` calls) kills the VMM and
// removes every file of the build, and the next Get builds the template
// afresh. Before the builder ran in the store's directory, its VMM ran on
// under /tmp where nothing found it.
func TestReapDeadBuilder(t *testing.T) {
	for _, tc := range []struct {
		point   string
		withVMM bool // the builder's VMM still runs after the kill
	}{
		{"template.build.workdir", false},
		{"test.vmm-running", true},
		{"test.vmm-saved", true},
		{"template.build.saved", false},
		{"template.build.mem-placed", false},
	} {
		t.Run(tc.point, func(t *testing.T) {
			dir, mem := t.TempDir(), t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBuilder$", "-test.count=1")
			cmd.Env = append(os.Environ(), builderEnv+"="+dir+":"+mem, crashpoint.Env+"="+tc.point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || !ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
				t.Fatalf("the builder was not killed at %s: %v\n%s", tc.point, err, out)
			}
			vmms, err := procmark.Scan(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				for _, p := range vmms {
					procmark.Kill(p)
				}
			})
			if got := len(vmms) > 0; got != tc.withVMM {
				t.Fatalf("builder's VMM running after the kill = %v (%v), want %v", got, vmms, tc.withVMM)
			}
			if left := entries(t, dir, mem); len(left) == 0 {
				t.Fatal("the killed builder left nothing: the test kills too late")
			}
			s := NewStore(dir, mem)
			n, err := s.Reap(context.Background())
			if err != nil || n != 1 {
				t.Fatalf("Reap = %d, %v; want 1 build cleaned", n, err)
			}
			for _, p := range vmms {
				if running(p) {
					t.Errorf("the dead builder's VMM %d still runs", p.Pid)
				}
			}
			if left := entries(t, dir, mem); len(left) != 0 {
				t.Fatalf("left after Reap: %v", left)
			}
			if _, err := s.Lookup(helperKey()); err == nil {
				t.Fatal("a half-built template is visible")
			}
		})
	}
}

// TestReapLeavesLiveBuilds: Reap never touches a build whose builder is
// alive (it holds the key's lock), nor its VMM.
func TestReapLeavesLiveBuilds(t *testing.T) {
	dir, mem := t.TempDir(), t.TempDir()
	s := NewStore(dir, mem)
	key := testKey(t)
	inBuild, release := make(chan string), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Get(context.Background(), key, func(ctx context.Context, key Key, m, state string) error {
			vmDir := filepath.Join(WorkDir(ctx), "vm")
			os.Mkdir(vmDir, 0o700)
			cmd := exec.Command("sleep", "600")
			cmd.Env = []string{procmark.Pair(vmDir)}
			if err := cmd.Start(); err != nil {
				return err
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			inBuild <- WorkDir(ctx)
			<-release
			os.Truncate(m, int64(key.MemoryMB)<<20)
			return os.WriteFile(state, []byte("state"), 0o600)
		})
		done <- err
	}()
	var work string
	select {
	case work = <-inBuild:
	case err := <-done:
		t.Fatalf("build ended early: %v", err)
	}
	vmms, _ := procmark.Scan(work)
	if len(vmms) != 1 {
		t.Fatalf("marked processes in the live build: %v", vmms)
	}
	// Another process's view of the store: its own lock file descriptors.
	n, err := NewStore(dir, mem).Reap(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("Reap of a live build = %d, %v; want 0", n, err)
	}
	if !running(vmms[0]) {
		t.Fatal("Reap killed a live build's VMM")
	}
	if _, err := os.Stat(work); err != nil {
		t.Fatalf("Reap removed a live build's work directory: %v", err)
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the build did not finish")
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatalf("the work directory outlived its build: %v", err)
	}
}

// running reports whether p runs: it has not exited (a zombie whose
// parent died waits for init to reap it, and has exited).
func running(p procmark.Proc) bool {
	if !procmark.Alive(p) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestCheckSocketRoom: a work directory leaves room for the builder's
// sockets, or the error says by how much the state directory must shrink.
func TestCheckSocketRoom(t *testing.T) {
	for _, tc := range []struct {
		work string
		ok   bool
	}{
		{"/run/kuasar/vm-templates/.build-0123456789abcdef-1234567890", true},
		{"/" + strings.Repeat("d", maxSocketPath-24-1), true},
		{"/" + strings.Repeat("d", maxSocketPath-24), false},
	} {
		err := CheckSocketRoom(tc.work, 24)
		if (err == nil) != tc.ok {
			t.Errorf("CheckSocketRoom(%d bytes) = %v, want ok %v", len(tc.work), err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "1 bytes shorter") {
			t.Errorf("error %q does not say by how much", err)
		}
	}
}
