package service

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

// zygoteEnv is an env whose Service pre-forks helpers, with one waiting.
func zygoteEnv(t *testing.T, opts ...Option) (*env, int) {
	t.Helper()
	e := newEnv(t, append([]Option{WithZygote()}, opts...)...)
	t.Cleanup(e.svc.closeZygote)
	e.svc.Prewarm(ctxT(t))
	z := e.svc.zygotePid()
	if z == 0 {
		t.Fatal("Prewarm left no zygote")
	}
	return e, z
}

func gone(pid int) func() bool {
	return func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		return os.IsNotExist(err)
	}
}

func TestZygoteUsedAndReplaced(t *testing.T) {
	for _, tc := range rootModes {
		t.Run(tc.name, func(t *testing.T) {
			e, z := zygoteEnv(t, tc.opts...)
			pid := e.run("z", makeBundle(t, []string{"sh", "-c", `echo $$; hostname; cat /marker; echo /proc/[0-9]*; id -u; pwd; echo err >&2; exit 7`},
				func(s *specs.Spec, _ string) {
					s.Process.User = specs.User{UID: 1000, GID: 1000}
					s.Process.Cwd = "/tmp"
				}), false)
			if int(pid) != z {
				t.Fatalf("create returned pid %d, want the zygote's %d", pid, z)
			}
			if code := e.wait("z", ""); code != 7 {
				t.Fatalf("exit %d, stderr %q", code, e.readAll("z", "", 2))
			}
			got := strings.Split(strings.TrimSpace(e.readAll("z", "", 1)), "\n")
			want := []string{"1", "kuasar-ctr", "inside-rootfs", "/proc/1", "1000", "/tmp"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("inside the container got %q, want %q", got, want)
			}
			if errOut := e.readAll("z", "", 2); errOut != "err\n" {
				t.Fatalf("stderr = %q, want err", errOut)
			}
			e.delete("z")
			var next int
			eventually(t, "a new zygote after the start", func() bool {
				next = e.svc.zygotePid()
				return next != 0 && next != z
			})
			// The replacement serves the next container too.
			if pid := e.run("z2", makeBundle(t, []string{"true"}), false); int(pid) != next {
				t.Fatalf("second create returned pid %d, want the new zygote's %d", pid, next)
			}
			if code := e.wait("z2", ""); code != 0 {
				t.Fatalf("second container exit %d", code)
			}
			e.delete("z2")
		})
	}
}

func TestZygoteHostnameIsTheGuests(t *testing.T) {
	e, z := zygoteEnv(t)
	want, _ := os.Hostname()
	pid := e.run("h", makeBundle(t, []string{"hostname"}, func(s *specs.Spec, _ string) { s.Hostname = "" }), false)
	if int(pid) != z {
		t.Fatalf("create returned pid %d, want the zygote's %d", pid, z)
	}
	e.wait("h", "")
	if got := strings.TrimSpace(e.readAll("h", "", 1)); got != want {
		t.Fatalf("hostname in a uts namespace without spec hostname = %q, want the guest's %q", got, want)
	}
	e.delete("h")
}

func TestZygoteFallbackOnOtherNamespaces(t *testing.T) {
	e, z := zygoteEnv(t)
	// Shares uts and ipc with the guest: the zygote has its own, so the
	// cold path must be taken and the hostname must be the guest's.
	want, _ := os.Hostname()
	pid := e.run("f", makeBundle(t, []string{"sh", "-c", "echo $$; hostname"}, func(s *specs.Spec, _ string) {
		s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}
	}), false)
	if int(pid) == z {
		t.Fatal("a container without uts/ipc namespaces got the zygote")
	}
	if code := e.wait("f", ""); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, e.readAll("f", "", 2))
	}
	if got := strings.TrimSpace(e.readAll("f", "", 1)); got != "1\n"+want {
		t.Fatalf("got %q, want pid 1 and the guest hostname %q", got, want)
	}
	e.delete("f")
	// The next zygote matches the last container's namespaces.
	eventually(t, "old zygote replaced", gone(z))
	eventually(t, "new zygote", func() bool { return e.svc.zygotePid() != 0 })
	e.svc.zmu.Lock()
	flags := e.svc.zyg.flags
	e.svc.zmu.Unlock()
	if flags != unix.CLONE_NEWNS|unix.CLONE_NEWPID {
		t.Fatalf("new zygote flags %#x, want mount+pid", flags)
	}
}

func TestZygoteCreateErrorAndDelete(t *testing.T) {
	e, z := zygoteEnv(t)
	ctx := ctxT(t)
	_, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "bad", Bundle: makeBundle(t, []string{"no-such-command"})})
	if err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("create with a missing command: %v", err)
	}
	eventually(t, "failed zygote reaped", gone(z))
	var next int
	eventually(t, "zygote refilled after a failed create", func() bool {
		next = e.svc.zygotePid()
		return next != 0
	})
	cr, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "c", Bundle: makeBundle(t, []string{"sleep", "1000"})})
	if err != nil {
		t.Fatal(err)
	}
	if int(cr.Pid) != next {
		t.Fatalf("create pid %d, want zygote %d", cr.Pid, next)
	}
	e.delete("c")
	eventually(t, "created container's helper gone", gone(next))
}

func TestZygoteKilledByShutdown(t *testing.T) {
	powered := make(chan struct{}, 1)
	e, z := zygoteEnv(t, WithShutdown(func() { powered <- struct{}{} }))
	if _, err := e.tasks.Shutdown(ctxT(t), &taskapi.ShutdownRequest{Now: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "zygote gone after shutdown", gone(z))
	e.svc.Prewarm(ctxT(t))
	if p := e.svc.zygotePid(); p != 0 {
		t.Fatalf("zygote %d forked after shutdown", p)
	}
	<-powered
}

// A zygote forked before SetupSandbox mounts the sandbox share must still
// set up a container whose bundle is on that share: either the mount
// propagated into it (the agent's / is shared, as in the guest) or it was
// replaced by one forked after the mount.
func TestZygoteSeesSandboxMounts(t *testing.T) {
	e, z := zygoteEnv(t)
	target := filepath.Join(t.TempDir(), "shared")
	a := NewAgentService(e.svc, WithResolvConf(filepath.Join(t.TempDir(), "resolv.conf")), WithPodFilesDir(t.TempDir()))
	if _, err := a.SetupSandbox(ctxT(t), &agentapi.SetupSandboxRequest{
		Mounts: []*agentapi.Mount{{Source: "kuasar", Fstype: "tmpfs", Target: target, Options: []string{"size=16m"}}},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	next := e.svc.zygotePid()
	if rootShared() != (next == z) {
		t.Fatalf("root shared %v, zygote %d before the mount and %d after", rootShared(), z, next)
	}
	bundle := filepath.Join(target, "b")
	// The test process's reaper collects every child, so cp is started and
	// waited for through it (os/exec's own wait would race it: ECHILD).
	cp := exec.Command("cp", "-a", makeBundle(t, []string{"cat", "/marker"}), bundle)
	out, err := os.CreateTemp(t.TempDir(), "cp-output")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cp.Stdout, cp.Stderr = out, out // a file: no copying goroutine that only Wait would end
	_, exited, err := e.reaper.Start(func() (int, error) {
		if err := cp.Start(); err != nil {
			return 0, err
		}
		return cp.Process.Pid, nil
	})
	if err != nil {
		t.Fatalf("copy bundle onto the share: %v", err)
	}
	select {
	case ex := <-exited:
		if ex.Status != 0 {
			msg, _ := os.ReadFile(out.Name())
			t.Fatalf("copy bundle onto the share: cp exited %d: %s", ex.Status, msg)
		}
	case <-ctxT(t).Done():
		t.Fatal("copy bundle onto the share: cp did not exit")
	}
	if pid := e.run("m", bundle, false); int(pid) != next {
		t.Fatalf("create pid %d, want zygote %d", pid, next)
	}
	if code := e.wait("m", ""); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, e.readAll("m", "", 2))
	}
	if out := e.readAll("m", "", 1); out != "inside-rootfs\n" {
		t.Fatalf("stdout %q", out)
	}
	e.delete("m")
}

// WaitZygoteParked returns once the zygote waits for its config (what the
// guest agent waits for before it reports ready, when a VM template is
// saved), and fails for a zygote that died before it was parked, so the
// agent never reports an idle guest that is not.
func TestWaitZygoteParked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kill    bool
		wantErr bool
	}{
		{name: "parked"},
		{name: "killed before parking", kill: true, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, z := zygoteEnv(t)
			if tc.kill {
				// At once: the zygote's Go runtime is still starting.
				if err := unix.Kill(z, unix.SIGKILL); err != nil {
					t.Fatal(err)
				}
				e.svc.zmu.Lock()
				zy := e.svc.zyg
				e.svc.zmu.Unlock()
				<-zy.parked
				if zy.parkErr == nil {
					t.Skip("the zygote parked before the kill reached it")
				}
			}
			err := e.svc.WaitZygoteParked(30 * time.Second)
			if (err != nil) != tc.wantErr {
				t.Fatalf("WaitZygoteParked: %v, want an error: %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			// The parked zygote sets up the next container.
			if pid := e.run("c", makeBundle(t, []string{"true"}), false); int(pid) != z {
				t.Fatalf("create returned pid %d, want the parked zygote's %d", pid, z)
			}
			if code := e.wait("c", ""); code != 0 {
				t.Fatalf("container exit %d", code)
			}
			e.delete("c")
		})
	}
}

// policies returns the scheduling policy of every thread of pid.
func policies(t *testing.T, pid int) []uint32 {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []uint32
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, a.Policy)
	}
	return out
}

// A waiting zygote is speculative work: all its threads run under
// SCHED_IDLE, so it never takes the CPU from real work. The container
// process it becomes runs under SCHED_NORMAL, and the agent's own threads
// never stay idle.
func TestZygoteRunsIdleContainerDoesNot(t *testing.T) {
	e, z := zygoteEnv(t)
	if err := e.svc.WaitZygoteParked(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range policies(t, z) {
		if p != unix.SCHED_IDLE {
			t.Fatalf("waiting zygote %d has threads at policies %v, want all SCHED_IDLE (%d)", z, policies(t, z), unix.SCHED_IDLE)
		}
	}
	for _, p := range policies(t, os.Getpid()) {
		if p != unix.SCHED_NORMAL {
			t.Fatalf("the agent's threads have policies %v, want SCHED_NORMAL only", policies(t, os.Getpid()))
		}
	}
	pid := e.run("c", makeBundle(t, []string{"sleep", "30"}), false)
	if int(pid) != z {
		t.Fatalf("create returned pid %d, want the zygote's %d", pid, z)
	}
	var got []uint32
	eventually(t, "the container's process exec'd", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm")
		return err == nil && strings.TrimSpace(string(b)) == "sleep"
	})
	got = policies(t, int(pid))
	for _, p := range got {
		if p != unix.SCHED_NORMAL {
			t.Fatalf("container process at policies %v, want SCHED_NORMAL", got)
		}
	}
	if _, err := e.tasks.Kill(ctxT(t), &taskapi.KillRequest{ID: "c", Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	e.wait("c", "")
	e.delete("c")
}
