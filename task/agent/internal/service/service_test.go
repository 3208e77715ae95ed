package service

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cgstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

func TestLifecycleExitCodeAndOutput(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	bundle := makeBundle(t, []string{"sh", "-c", "echo hello; echo oops >&2; exit 3"})
	cr, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "life", Bundle: bundle, Stdout: "o", Stderr: "e"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: "life"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != task.Status_CREATED || st.Pid != cr.Pid || st.Bundle != bundle || st.Stdout != "o" {
		t.Fatalf("state after create = %v", st)
	}
	if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "life"}); err != nil {
		t.Fatal(err)
	}
	// Wait first: output written before anyone reads must not be lost.
	if code := e.wait("life", ""); code != 3 {
		t.Fatalf("exit status = %d, want 3", code)
	}
	if out := e.readAll("life", "", 1); out != "hello\n" {
		t.Fatalf("stdout = %q, want hello", out)
	}
	if out := e.readAll("life", "", 2); out != "oops\n" {
		t.Fatalf("stderr = %q, want oops", out)
	}
	st, err = e.tasks.State(ctx, &taskapi.StateRequest{ID: "life"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != task.Status_STOPPED || st.ExitStatus != 3 || st.ExitedAt == nil {
		t.Fatalf("state after exit = %v", st)
	}
	if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "life"}); !isKind(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("second start: %v, want FailedPrecondition", err)
	}
	d := e.delete("life")
	if d.ExitStatus != 3 || d.Pid != cr.Pid || d.ExitedAt.AsTime().IsZero() {
		t.Fatalf("delete = %v", d)
	}
	if _, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: "life"}); !isKind(err, errdefs.ErrNotFound) {
		t.Fatalf("state after delete: %v, want NotFound", err)
	}
}

func TestStdinEcho(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	e.run("cat", makeBundle(t, []string{"cat"}), true)
	for _, chunk := range []string{"ping\n", "pong\n"} {
		w, err := e.agent.WriteStdin(ctx, &agentapi.WriteStreamRequest{ContainerId: "cat", Data: []byte(chunk)})
		if err != nil {
			t.Fatal(err)
		}
		if w.Len != uint32(len(chunk)) {
			t.Fatalf("wrote %d, want %d", w.Len, len(chunk))
		}
	}
	if _, err := e.agent.CloseStdin(ctx, &agentapi.CloseStdinRequest{ContainerId: "cat"}); err != nil {
		t.Fatal(err)
	}
	if out := e.readAll("cat", "", 1); out != "ping\npong\n" {
		t.Fatalf("stdout = %q", out)
	}
	if code := e.wait("cat", ""); code != 0 {
		t.Fatalf("cat exit = %d", code)
	}
	if _, err := e.agent.WriteStdin(ctx, &agentapi.WriteStreamRequest{ContainerId: "cat", Data: []byte("late")}); !isKind(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("write after close: %v, want FailedPrecondition", err)
	}
	e.delete("cat")
}

func TestKillAndExec(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	initPid := e.run("k", makeBundle(t, []string{"sleep", "1000"}), false)

	// Exec sees the container's pid namespace, hostname and rootfs.
	e.exec("k", "look", false, "sh", "-c", `echo $$; hostname; cat /marker; readlink /proc/1/exe`)
	if code := e.wait("k", "look"); code != 0 {
		t.Fatalf("exec exit = %d, stderr %q", code, e.readAll("k", "look", 2))
	}
	lines := strings.Split(strings.TrimSpace(e.readAll("k", "look", 1)), "\n")
	if len(lines) != 4 {
		t.Fatalf("exec output = %q", lines)
	}
	if n, err := strconv.Atoi(lines[0]); err != nil || n <= 1 || n > 100 {
		t.Fatalf("exec pid inside = %q, want a small pid in the container's namespace", lines[0])
	}
	if lines[1] != "kuasar-ctr" || lines[2] != "inside-rootfs" || lines[3] != "/bin/busybox" {
		t.Fatalf("exec does not see the container: %q", lines)
	}
	if _, err := e.tasks.Delete(ctx, &taskapi.DeleteRequest{ID: "k", ExecID: "look"}); err != nil {
		t.Fatal(err)
	}

	// SIGTERM kills an exec (not PID 1, so default disposition applies).
	e.exec("k", "sleeper", false, "sleep", "1000")
	pids, err := e.tasks.Pids(ctx, &taskapi.PidsRequest{ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	found := map[uint32]bool{}
	for _, p := range pids.Processes {
		found[p.Pid] = true
	}
	est, _ := e.tasks.State(ctx, &taskapi.StateRequest{ID: "k", ExecID: "sleeper"})
	if len(pids.Processes) != 2 || !found[initPid] || !found[est.Pid] {
		t.Fatalf("pids = %v, want init %d and exec %d", pids.Processes, initPid, est.Pid)
	}
	if _, err := e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "k", ExecID: "sleeper", Signal: 15}); err != nil {
		t.Fatal(err)
	}
	if code := e.wait("k", "sleeper"); code != 143 {
		t.Fatalf("SIGTERM exit = %d, want 143", code)
	}
	if _, err := e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "k", ExecID: "sleeper", Signal: 15}); !isKind(err, errdefs.ErrNotFound) {
		t.Fatalf("kill of exited exec: %v, want NotFound", err)
	}

	// A running container cannot be deleted.
	if _, err := e.tasks.Delete(ctx, &taskapi.DeleteRequest{ID: "k"}); !isKind(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("delete running: %v, want FailedPrecondition", err)
	}
	if _, err := e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "k", Signal: 9, All: true}); err != nil {
		t.Fatal(err)
	}
	if code := e.wait("k", ""); code != 137 {
		t.Fatalf("SIGKILL exit = %d, want 137", code)
	}
	e.delete("k")
}

// rootModes are the two ways a container enters its rootfs: pivot_root, and
// the move-and-chroot the agent falls back to on an initramfs root.
var rootModes = []struct {
	name string
	opts []Option
}{
	{"pivot_root", nil},
	{"move and chroot (initramfs)", []Option{WithNoPivot()}},
}

func TestNamespacesApplied(t *testing.T) {
	for _, tc := range rootModes {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts...)
			hostHost, _ := os.Hostname()
			e.run("ns", makeBundle(t, []string{"sh", "-c", `echo $$; hostname; cat /marker; echo /proc/[0-9]*; id -u; ls /dev/null`},
				func(s *specs.Spec, _ string) { s.Process.User = specs.User{UID: 1000, GID: 1000} }), false)
			if code := e.wait("ns", ""); code != 0 {
				t.Fatalf("exit %d, stderr %q", code, e.readAll("ns", "", 2))
			}
			got := strings.Split(strings.TrimSpace(e.readAll("ns", "", 1)), "\n")
			want := []string{"1", "kuasar-ctr", "inside-rootfs", "/proc/1", "1000", "/dev/null"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("inside the container got %q, want %q (pid 1, own hostname, own rootfs, own /proc, uid, /dev nodes)", got, want)
			}
			if h, _ := os.Hostname(); h != hostHost {
				t.Fatalf("host hostname changed from %q to %q", hostHost, h)
			}
			e.delete("ns")
		})
	}
}

func TestMountDestinationsStayInsideRootfs(t *testing.T) {
	e := newEnv(t)
	outside := t.TempDir()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "data"), []byte("shared\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := makeBundle(t, []string{"cat", "/abs/mnt/data", "/rel/mnt/data"}, func(s *specs.Spec, rootfs string) {
		s.Mounts = s.Mounts[:3] // no tmpfs on /tmp: the mount points must show up in the rootfs dir
		// Both symlinks point outside the rootfs if followed on the host.
		if err := os.Symlink(outside, filepath.Join(rootfs, "abs")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../../../../../../../"+outside, filepath.Join(rootfs, "rel")); err != nil {
			t.Fatal(err)
		}
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/abs/mnt", Type: "bind", Source: src, Options: []string{"rbind", "ro"}},
			specs.Mount{Destination: "/rel/mnt", Type: "bind", Source: src, Options: []string{"bind"}})
	})
	e.run("esc", bundle, false)
	if code := e.wait("esc", ""); code != 0 {
		t.Fatalf("exit %d: %s", code, e.readAll("esc", "", 2))
	}
	if out := e.readAll("esc", "", 1); out != "shared\nshared\n" {
		t.Fatalf("stdout %q", out)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 0 {
		t.Fatalf("mount point created outside the rootfs in %s: %v", outside, ents)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", outside, "mnt")); err != nil {
		t.Fatalf("mount point not created inside the rootfs: %v", err)
	}
	e.delete("esc")
}

func TestOrphansReaped(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)

	// In its own pid namespace, PID 1's leftover children die with the
	// namespace and the kernel reaps them: nothing may be left running.
	e.run("orph-ns", makeBundle(t, []string{"sh", "-c", "sleep 1000 & sleep 1000 & echo started"}), false)
	if code := e.wait("orph-ns", ""); code != 0 {
		t.Fatalf("exit %d", code)
	}
	eventually(t, "the namespace to be empty", func() bool {
		p, err := e.tasks.Pids(ctx, &taskapi.PidsRequest{ID: "orph-ns"})
		return err == nil && len(p.Processes) == 0 && len(zombies(t)) == 0
	})
	e.delete("orph-ns")

	// Sharing the agent's pid namespace, leftover children are re-parented
	// to the agent (PID 1 in the guest, child subreaper here) and must be
	// reaped by the reaper although nobody registered them.
	before := e.reaper.Orphans()
	e.run("orph-shared", makeBundle(t, []string{"sh", "-c", "sleep 0.2 & sleep 0.2 & echo started"}, func(s *specs.Spec, _ string) {
		s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		s.Hostname = ""
	}), false)
	if code := e.wait("orph-shared", ""); code != 0 {
		t.Fatalf("exit %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.reaper.Orphans() < before+2 || len(zombies(t)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("orphans reaped: %d (want 2), zombies %v", e.reaper.Orphans()-before, zombies(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.delete("orph-shared")
}

func TestBackpressureKeepsAllOutput(t *testing.T) {
	e := newEnv(t, WithStreamBuffer(64<<10))
	ctx := ctxT(t)
	const size = 300000
	e.run("big", makeBundle(t, []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}), false)
	time.Sleep(300 * time.Millisecond)
	st, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: "big"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != task.Status_RUNNING {
		t.Fatalf("writer is %v with a full 64 KiB buffer, want RUNNING (blocked by backpressure)", st.Status)
	}
	total := 0
	for {
		r, err := e.agent.ReadStdout(ctx, &agentapi.ReadStreamRequest{ContainerId: "big", Len: 1 << 20})
		if err != nil {
			if !isKind(err, errdefs.ErrOutOfRange) {
				t.Fatal(err)
			}
			break
		}
		for _, c := range r.Data {
			if c != 0 {
				t.Fatal("corrupted output")
			}
		}
		total += len(r.Data)
	}
	if total != size {
		t.Fatalf("read %d bytes, want %d", total, size)
	}
	if code := e.wait("big", ""); code != 0 {
		t.Fatalf("exit %d", code)
	}
	e.delete("big")
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	good := makeBundle(t, []string{"true"})
	noConfig := t.TempDir()
	badJSON := t.TempDir()
	os.WriteFile(filepath.Join(badJSON, "config.json"), []byte("{not json"), 0o644)
	tests := []struct {
		name string
		req  *taskapi.CreateTaskRequest
		kind error
		msg  string
	}{
		{"relative bundle", &taskapi.CreateTaskRequest{ID: "a", Bundle: "rel/bundle"}, errdefs.ErrInvalidArgument, "absolute"},
		{"missing bundle", &taskapi.CreateTaskRequest{ID: "a", Bundle: "/nonexistent/bundle"}, errdefs.ErrInvalidArgument, "config.json"},
		{"no config", &taskapi.CreateTaskRequest{ID: "a", Bundle: noConfig}, errdefs.ErrInvalidArgument, "config.json"},
		{"bad json", &taskapi.CreateTaskRequest{ID: "a", Bundle: badJSON}, errdefs.ErrInvalidArgument, "runtime-spec"},
		{"no args", &taskapi.CreateTaskRequest{ID: "a", Bundle: makeBundle(t, nil)}, errdefs.ErrInvalidArgument, "process.args"},
		{"no rootfs", &taskapi.CreateTaskRequest{ID: "a", Bundle: makeBundle(t, []string{"true"}, func(s *specs.Spec, _ string) { s.Root.Path = "missing" })}, errdefs.ErrInvalidArgument, "rootfs"},
		{"binary not in rootfs", &taskapi.CreateTaskRequest{ID: "a", Bundle: makeBundle(t, []string{"nosuchcmd"})}, errdefs.ErrInvalidArgument, "not found in PATH"},
		{"relative mount", &taskapi.CreateTaskRequest{ID: "a", Bundle: makeBundle(t, []string{"true"}, func(s *specs.Spec, _ string) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "rel", Type: "tmpfs"})
		})}, errdefs.ErrInvalidArgument, "not absolute"},
		{"terminal", &taskapi.CreateTaskRequest{ID: "a", Bundle: good, Terminal: true}, errdefs.ErrNotImplemented, "terminal"},
		{"bad id", &taskapi.CreateTaskRequest{ID: "../x", Bundle: good}, errdefs.ErrInvalidArgument, "container id"},
		{"user ns", &taskapi.CreateTaskRequest{ID: "a", Bundle: makeBundle(t, []string{"true"}, func(s *specs.Spec, _ string) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		})}, errdefs.ErrNotImplemented, "user namespaces"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.tasks.Create(ctx, tc.req)
			if !isKind(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.kind, tc.msg)
			}
			// A failed create leaves nothing behind.
			if _, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: tc.req.ID}); !isKind(err, errdefs.ErrNotFound) && !isKind(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("state after failed create: %v", err)
			}
			if z := zombies(t); len(z) != 0 {
				t.Fatalf("zombies left: %v", z)
			}
		})
	}
	// The id is free again after a failed create.
	e.run("a", good, false)
	if _, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "a", Bundle: good}); !isKind(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate: %v", err)
	}
	e.wait("a", "")
	for name, err := range map[string]error{
		"state unknown": func() error { _, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: "nope"}); return err }(),
		"exec unknown":  func() error { _, err := e.tasks.State(ctx, &taskapi.StateRequest{ID: "a", ExecID: "nope"}); return err }(),
		"read unknown": func() error {
			_, err := e.agent.ReadStdout(ctx, &agentapi.ReadStreamRequest{ContainerId: "nope"})
			return err
		}(),
		"stdin not asked": func() error {
			_, err := e.agent.WriteStdin(ctx, &agentapi.WriteStreamRequest{ContainerId: "a"})
			return err
		}(),
	} {
		if !isKind(err, errdefs.ErrNotFound) {
			t.Errorf("%s: %v, want NotFound", name, err)
		}
	}
	if _, err := e.tasks.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: "a"}); !isKind(err, errdefs.ErrNotImplemented) {
		t.Errorf("resize pty: %v", err)
	}
	if _, err := e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "a", Signal: 0}); !isKind(err, errdefs.ErrInvalidArgument) && !isKind(err, errdefs.ErrNotFound) {
		t.Errorf("kill signal 0: %v", err)
	}
	e.delete("a")
}

func TestDeleteCreatedKillsHelper(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cr, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "c", Bundle: makeBundle(t, []string{"sleep", "1000"})})
	if err != nil {
		t.Fatal(err)
	}
	e.delete("c")
	eventually(t, "helper gone", func() bool {
		_, err := os.Stat("/proc/" + strconv.Itoa(int(cr.Pid)))
		return os.IsNotExist(err)
	})
}

func TestStatsConnectShutdown(t *testing.T) {
	powered := make(chan struct{}, 1)
	e := newEnv(t, WithShutdown(func() { powered <- struct{}{} }))
	ctx := ctxT(t)
	pid := e.run("s", makeBundle(t, []string{"sleep", "1000"}), false)
	st, err := e.tasks.Stats(ctx, &taskapi.StatsRequest{ID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Stats.TypeUrl, "io.containerd.cgroups.v2.Metrics") {
		t.Fatalf("stats type %q", st.Stats.TypeUrl)
	}
	v, err := typeurl.UnmarshalAny(st.Stats)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(*cgstats.Metrics)
	if !ok {
		t.Fatalf("stats decode to %T", v)
	}
	// Each field carries what its name says: the resident set split by
	// kind of page, CPU usage the sum of user and kernel time.
	if mm := m.Memory; mm.Anon+mm.File+mm.Shmem != mm.Usage {
		t.Errorf("memory %+v: want usage = anon + file + shmem", mm)
	}
	if c := m.CPU; c.UsageUsec != c.UserUsec+c.SystemUsec {
		t.Errorf("cpu %+v: usage is not user + system", c)
	}
	c, err := e.tasks.Connect(ctx, &taskapi.ConnectRequest{ID: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.TaskPid != pid || c.ShimPid != uint32(os.Getpid()) {
		t.Fatalf("connect = %v", c)
	}
	if _, err := e.tasks.Shutdown(ctx, &taskapi.ShutdownRequest{Now: true}); !isKind(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("shutdown with a task left: %v", err)
	}
	e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "s", Signal: 9})
	e.wait("s", "")
	e.delete("s")
	if _, err := e.tasks.Shutdown(ctx, &taskapi.ShutdownRequest{Now: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-powered:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown hook not called")
	}
}

func TestExecIntoChrootedContainer(t *testing.T) {
	e := newEnv(t, WithNoPivot())
	e.run("np", makeBundle(t, []string{"sleep", "1000"}), false)
	e.exec("np", "x", true, "sh", "-c", "cat /marker; cat; echo $$")
	ctx := ctxT(t)
	if _, err := e.agent.WriteStdin(ctx, &agentapi.WriteStreamRequest{ContainerId: "np", ExecId: "x", Data: []byte("via-stdin\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tasks.CloseIO(ctx, &taskapi.CloseIORequest{ID: "np", ExecID: "x", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if code := e.wait("np", "x"); code != 0 {
		t.Fatalf("exec exit %d: %s", code, e.readAll("np", "x", 2))
	}
	got := strings.Split(strings.TrimSpace(e.readAll("np", "x", 1)), "\n")
	if len(got) != 3 || got[0] != "inside-rootfs" || got[1] != "via-stdin" || got[2] == "1" {
		t.Fatalf("exec output %q", got)
	}
	if _, err := e.tasks.Kill(ctx, &taskapi.KillRequest{ID: "np", Signal: 9, All: true}); err != nil {
		t.Fatal(err)
	}
	if code := e.wait("np", ""); code != 137 {
		t.Fatalf("exit %d", code)
	}
	e.delete("np")
}

func TestNoDescriptorLeak(t *testing.T) {
	e := newEnv(t)
	bundle := makeBundle(t, []string{"sh", "-c", "echo out; echo err >&2"})
	countFds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	run := func(id string) {
		e.run(id, bundle, true)
		e.wait(id, "")
		e.readAll(id, "", 1)
		e.readAll(id, "", 2)
		e.delete(id)
	}
	run("warmup")
	before := countFds()
	for i := 0; i < 5; i++ {
		run("leak-" + strconv.Itoa(i))
	}
	eventually(t, "descriptors to be released", func() bool { return countFds() <= before })
}

func TestMaskedReadonlyPathsAndRlimits(t *testing.T) {
	e := newEnv(t)
	bundle := makeBundle(t, []string{"sh", "-c", `cat /secret/file; echo "[$(cat /hidden.txt)]"; echo x > /ro/f 2>/dev/null && echo writable || echo readonly; ulimit -n`},
		func(s *specs.Spec, rootfs string) {
			os.MkdirAll(filepath.Join(rootfs, "secret"), 0o755)
			os.WriteFile(filepath.Join(rootfs, "secret/file"), []byte("leak\n"), 0o644)
			os.WriteFile(filepath.Join(rootfs, "hidden.txt"), []byte("leak"), 0o644)
			os.MkdirAll(filepath.Join(rootfs, "ro"), 0o755)
			s.Linux.MaskedPaths = []string{"/secret", "/hidden.txt", "/does/not/exist"}
			s.Linux.ReadonlyPaths = []string{"/ro", "/missing"}
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 321, Hard: 321}}
		})
	e.run("mask", bundle, false)
	e.wait("mask", "")
	if got := e.readAll("mask", "", 1); got != "[]\nreadonly\n321\n" {
		t.Fatalf("stdout %q, want masked dir (cat fails), empty masked file, read-only dir, nofile 321", got)
	}
	if got := e.readAll("mask", "", 2); !strings.Contains(got, "/secret/file") {
		t.Fatalf("stderr %q, want cat failing on the masked dir", got)
	}
	e.delete("mask")
}

// TestContainerdDefaultSpec runs a container whose config.json is
// containerd's own default Linux spec (what ctr and CRI start from): every
// default mount, masked path and namespace must work in the agent.
func TestContainerdDefaultSpec(t *testing.T) {
	e := newEnv(t)
	ctx := namespaces.WithNamespace(ctxT(t), "k8s.io")
	spec, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "dflt"},
		oci.WithProcessArgs("sh", "-c", "cat /proc/self/status | grep -c NSpid; ls /dev/null /dev/pts/ptmx /dev/shm >/dev/null && echo devs-ok; cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l"),
		oci.WithHostname("dflt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := makeBundle(t, []string{"true"}, func(s *specs.Spec, _ string) {
		*s = *spec
		s.Root = &specs.Root{Path: "rootfs"}
	})
	e.run("dflt", bundle, false)
	if code := e.wait("dflt", ""); code != 0 {
		t.Fatalf("exit %d: %s", code, e.readAll("dflt", "", 2))
	}
	if got := e.readAll("dflt", "", 1); got != "1\ndevs-ok\n0\n0\n" {
		t.Fatalf("stdout %q, want NSpid line, devices present, /proc/timer_list and /sys/firmware masked (empty)", got)
	}
	e.delete("dflt")
}

func TestHostOnlyFilesMappedToGuestFiles(t *testing.T) {
	guest := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(guest, []byte("nameserver 10.0.0.10\n"), 0o644)
	e := newEnv(t, WithGuestFiles(map[string]string{"/etc/resolv.conf": guest, "/etc/hosts": "/nonexistent/guest/hosts"}))
	bundle := makeBundle(t, []string{"sh", "-c", "cat /etc/resolv.conf; cat /etc/hosts"}, func(s *specs.Spec, rootfs string) {
		os.WriteFile(filepath.Join(rootfs, "etc/hosts"), []byte("image-hosts\n"), 0o644)
		s.Mounts = append(s.Mounts,
			// Host paths as CRI writes them: absent in the guest.
			specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/containerd/cri/sandboxes/x/resolv.conf", Options: []string{"rbind", "ro"}},
			specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/cri/sandboxes/x/hosts", Options: []string{"rbind", "ro"}})
	})
	e.run("files", bundle, false)
	e.wait("files", "")
	if got := e.readAll("files", "", 1); got != "nameserver 10.0.0.10\nimage-hosts\n" {
		t.Fatalf("stdout %q: want the guest resolv.conf and the image's own hosts (no guest file to map)", got)
	}
	e.delete("files")
}

func TestExecErrors(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	bundle := makeBundle(t, []string{"sleep", "1000"})
	if _, err := e.tasks.Create(ctx, &taskapi.CreateTaskRequest{ID: "ee", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	spec := func(args ...string) *anypb.Any {
		b, _ := json.Marshal(&specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}})
		return &anypb.Any{Value: b}
	}
	// Exec before the container runs: recorded, but cannot start.
	if _, err := e.tasks.Exec(ctx, &taskapi.ExecProcessRequest{ID: "ee", ExecID: "early", Spec: spec("true")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "ee", ExecID: "early"}); !isKind(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("start exec in created container: %v", err)
	}
	if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "ee"}); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		req  *taskapi.ExecProcessRequest
		kind error
	}{
		"duplicate":    {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "early", Spec: spec("true")}, errdefs.ErrAlreadyExists},
		"no spec":      {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "x1"}, errdefs.ErrInvalidArgument},
		"bad spec":     {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "x2", Spec: &anypb.Any{Value: []byte("{")}}, errdefs.ErrInvalidArgument},
		"no args":      {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "x3", Spec: spec()}, errdefs.ErrInvalidArgument},
		"terminal":     {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "x4", Spec: spec("true"), Terminal: true}, errdefs.ErrNotImplemented},
		"bad exec id":  {&taskapi.ExecProcessRequest{ID: "ee", ExecID: "a/b", Spec: spec("true")}, errdefs.ErrInvalidArgument},
		"no container": {&taskapi.ExecProcessRequest{ID: "nope", ExecID: "x5", Spec: spec("true")}, errdefs.ErrNotFound},
	} {
		if _, err := e.tasks.Exec(ctx, tc.req); !isKind(err, tc.kind) {
			t.Errorf("%s: %v, want %v", name, err, tc.kind)
		}
	}
	if _, err := e.tasks.Exec(ctx, &taskapi.ExecProcessRequest{ID: "ee", ExecID: "missing", Spec: spec("no-such-binary")}); err != nil {
		t.Fatal(err)
	}
	_, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "ee", ExecID: "missing"})
	if !isKind(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "no-such-binary") {
		t.Fatalf("start exec of a missing binary: %v", err)
	}
	// The early exec can run now that the container does.
	if _, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: "ee", ExecID: "early"}); err != nil {
		t.Fatal(err)
	}
	if code := e.wait("ee", "early"); code != 0 {
		t.Fatalf("early exec exit %d", code)
	}
}
