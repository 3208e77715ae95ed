package wasmtask_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/task/wasmtask"
)

// res carries a call's two results so that tests can write r(call()).get(t).
type res[T any] struct {
	v   T
	err error
}

func r[T any](v T, err error) res[T] { return res[T]{v, err} }

// get fails the test when the call failed.
func (x res[T]) get(t *testing.T) T {
	t.Helper()
	if x.err != nil {
		t.Fatal(x.err)
	}
	return x.v
}

func (h *harness) runToExit(t *testing.T, b *bundle) uint32 {
	t.Helper()
	r(h.client.Create(h.ctx, b.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: b.req.ID})).get(t)
	w := r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: b.req.ID})).get(t)
	return w.ExitStatus
}

func TestHelloLifecycle(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "hello", []string{"/app/hello.wasm", "a1"}, map[string][]byte{"app/hello.wasm": fixtures.Hello})

	cr := r(h.client.Create(h.ctx, b.req)).get(t)
	if cr.Pid != uint32(os.Getpid()) {
		t.Errorf("pid %d, want the hosting process's %d", cr.Pid, os.Getpid())
	}
	if !mounted(t, filepath.Join(b.dir, "rootfs")) {
		t.Fatal("rootfs not mounted after Create")
	}
	st := r(h.client.State(h.ctx, &taskAPI.StateRequest{ID: "hello"})).get(t)
	if st.Status != task.Status_CREATED || st.Bundle != b.dir || st.Stdout != b.stdout.path {
		t.Errorf("state after create: %v", st)
	}
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "hello"})).get(t)
	w := r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "hello"})).get(t)
	if w.ExitStatus != 0 || w.ExitedAt == nil {
		t.Errorf("wait: %v", w)
	}
	out := b.stdout.wait(t)
	for _, want := range []string{fixtures.HelloGreeting, "argv[0]=/app/hello.wasm", "argv[1]=a1", "env GREETING=hi"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout %q lacks %q", out, want)
		}
	}
	if _, err := h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "hello"}); !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("second start: %v, want FailedPrecondition", err)
	}
	st = r(h.client.State(h.ctx, &taskAPI.StateRequest{ID: "hello"})).get(t)
	if st.Status != task.Status_STOPPED || st.ExitStatus != 0 {
		t.Errorf("state after exit: %v", st)
	}
	d := r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "hello"})).get(t)
	if d.ExitStatus != 0 || d.Pid != cr.Pid {
		t.Errorf("delete: %v", d)
	}
	if mounted(t, filepath.Join(b.dir, "rootfs")) {
		t.Error("rootfs still mounted after Delete")
	}
	if _, err := h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "hello"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
	// containerd sends Shutdown after every delete.
	r(h.client.Shutdown(h.ctx, &taskAPI.ShutdownRequest{ID: "hello"})).get(t)
	h.events.waitTopics(t, allTopics...)
	h.events.mu.Lock()
	exit := h.events.evs[2].(*eventstypes.TaskExit)
	h.events.mu.Unlock()
	if exit.ContainerID != "hello" || exit.ID != "hello" || exit.ExitStatus != 0 || exit.Pid != cr.Pid {
		t.Errorf("exit event: %v", exit)
	}
}

func TestOverlayRootfs(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "ovl", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	upper, work := filepath.Join(h.dir, "upper"), filepath.Join(h.dir, "work")
	os.Mkdir(upper, 0o755)
	os.Mkdir(work, 0o755)
	b.req.Rootfs = []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + b.src, "upperdir=" + upper, "workdir=" + work}}}
	if code := h.runToExit(t, b); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(b.stdout.wait(t), fixtures.HelloGreeting) {
		t.Error("no greeting")
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "ovl"})).get(t)
	ensureUnmounted(t, b)
}

// TestCRIPodFilesIgnored: CRI binds /etc/hosts, /etc/resolv.conf, /dev/shm
// ... into every container; a Wasm guest cannot use them and their sources
// may not exist for an external sandboxer's pods. A bind of a directory is
// preopened.
func TestCRIPodFilesAndVolumes(t *testing.T) {
	h := newHarness(t)
	vol := filepath.Join(h.dir, "volume")
	os.Mkdir(vol, 0o755)
	os.WriteFile(filepath.Join(vol, "f.txt"), []byte("volume data"), 0o644)
	b := h.bundle(t, "cri", []string{"/w.wasm", "read", "/data/f.txt"}, map[string][]byte{"w.wasm": fixtures.WASI},
		func(s *specs.Spec, _ *bundle) {
			s.Mounts = []specs.Mount{
				{Destination: "/etc/hosts", Type: "bind", Source: "/nonexistent/hosts", Options: []string{"rbind", "ro"}},
				{Destination: "/dev/shm", Type: "bind", Source: "/nonexistent/shm", Options: []string{"rbind"}},
				{Destination: "/proc", Type: "proc", Source: "proc"},
				{Destination: "/data", Type: "bind", Source: vol, Options: []string{"rbind", "ro"}},
			}
		})
	if code := h.runToExit(t, b); code != 0 {
		t.Errorf("exit %d, stderr %q", code, b.stderr.wait(t))
	}
	if got := b.stdout.wait(t); got != "volume data" {
		t.Errorf("stdout %q", got)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "cri"})).get(t)
}

func TestExitCodes(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name   string
		args   []string
		files  map[string][]byte
		want   uint32
		stderr string
	}{
		{"proc_exit", []string{"/exit.wasm"}, map[string][]byte{"exit.wasm": fixtures.ExitCode}, fixtures.ExitCodeValue, ""},
		{"wasi-exit", []string{"wasi.wasm", "exit", "7"}, map[string][]byte{"wasi.wasm": fixtures.WASI}, 7, ""},
		{"function", []string{"/r.wasm#fail"}, map[string][]byte{"r.wasm": fixtures.Reactor}, 3, ""},
		{"trap", []string{"/r.wasm#trap"}, map[string][]byte{"r.wasm": fixtures.Reactor}, 137, ""},
		{"stderr", []string{"/w.wasm", "stderr", "oops"}, map[string][]byte{"w.wasm": fixtures.WASI}, 0, "oops\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := h.bundle(t, tc.name, tc.args, tc.files)
			if got := h.runToExit(t, b); got != tc.want {
				t.Errorf("exit %d, want %d", got, tc.want)
			}
			if got := b.stderr.wait(t); tc.stderr != "" && got != tc.stderr {
				t.Errorf("stderr %q, want %q", got, tc.stderr)
			}
			d := r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: tc.name})).get(t)
			if d.ExitStatus != tc.want {
				t.Errorf("delete exit %d, want %d", d.ExitStatus, tc.want)
			}
			ensureUnmounted(t, b)
		})
	}
}

func TestKill(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name string
		args []string
		sig  syscall.Signal
		want uint32
	}{
		{"loop-kill", []string{"/loop.wasm"}, syscall.SIGKILL, 137},
		{"loop-term", []string{"/loop.wasm"}, syscall.SIGTERM, 143},
		{"loop-int", []string{"/loop.wasm"}, syscall.SIGINT, 130},
		{"sleep-term", []string{"/wasi.wasm", "sleep", "600"}, syscall.SIGTERM, 143},
		{"stdin-kill", []string{"/wasi.wasm", "idle"}, syscall.SIGKILL, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []bundleOpt
			if strings.HasPrefix(tc.name, "stdin") {
				opts = append(opts, withStdin())
			}
			b := h.bundle(t, tc.name, tc.args, map[string][]byte{"loop.wasm": fixtures.Loop, "wasi.wasm": fixtures.WASI}, opts...)
			r(h.client.Create(h.ctx, b.req)).get(t)
			r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: tc.name})).get(t)
			time.Sleep(50 * time.Millisecond)
			st := r(h.client.State(h.ctx, &taskAPI.StateRequest{ID: tc.name})).get(t)
			if st.Status != task.Status_RUNNING {
				t.Fatalf("status %v before kill", st.Status)
			}
			r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: tc.name, Signal: uint32(tc.sig)})).get(t)
			ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
			defer cancel()
			w := r(h.client.Wait(ctx, &taskAPI.WaitRequest{ID: tc.name})).get(t)
			if w.ExitStatus != tc.want {
				t.Errorf("exit %d, want %d", w.ExitStatus, tc.want)
			}
			if _, err := h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: tc.name, Signal: 9}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
				t.Errorf("kill after exit: %v, want NotFound", err)
			}
			r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: tc.name})).get(t)
			ensureUnmounted(t, b)
		})
	}
}

func TestCloseIOUnblocksCat(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "cat", []string{"/wasi.wasm", "cat"}, map[string][]byte{"wasi.wasm": fixtures.WASI}, withStdin())
	r(h.client.Create(h.ctx, b.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "cat"})).get(t)
	if _, err := b.stdinW.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	st := r(h.client.State(h.ctx, &taskAPI.StateRequest{ID: "cat"})).get(t)
	if st.Status != task.Status_RUNNING {
		t.Fatalf("cat exited before CloseIO: %v", st)
	}
	r(h.client.CloseIO(h.ctx, &taskAPI.CloseIORequest{ID: "cat", Stdin: true})).get(t)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	w := r(h.client.Wait(ctx, &taskAPI.WaitRequest{ID: "cat"})).get(t)
	if w.ExitStatus != 0 {
		t.Errorf("exit %d", w.ExitStatus)
	}
	if got := b.stdout.wait(t); got != "ping\n" {
		t.Errorf("stdout %q", got)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "cat"})).get(t)
}

func TestExecStatsPids(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "main", []string{"/wasi.wasm", "sleep", "600"}, map[string][]byte{"wasi.wasm": fixtures.WASI, "r.wasm": fixtures.Reactor})
	r(h.client.Create(h.ctx, b.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "main"})).get(t)

	for _, tc := range []struct {
		execID string
		args   []string
		out    string
		code   uint32
	}{
		{"e-other-module", []string{"/r.wasm#greet"}, "hello from greet\n", 0},
		{"e-same-module", []string{"/wasi.wasm", "args", "x"}, "/wasi.wasm\nargs\nx\n", 0},
		{"e-exit", []string{"/wasi.wasm", "exit", "5"}, "", 5},
	} {
		t.Run(tc.execID, func(t *testing.T) {
			out := newCapture(t, filepath.Join(h.dir, tc.execID+"-out"))
			spec, _ := typeurl.MarshalAnyToProto(&specs.Process{Args: tc.args, Cwd: "/"})
			r(h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "main", ExecID: tc.execID, Stdout: out.path, Spec: spec})).get(t)
			r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "main", ExecID: tc.execID})).get(t)
			w := r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "main", ExecID: tc.execID})).get(t)
			if w.ExitStatus != tc.code {
				t.Errorf("exec exit %d, want %d", w.ExitStatus, tc.code)
			}
			if got := out.wait(t); got != tc.out {
				t.Errorf("exec stdout %q, want %q", got, tc.out)
			}
			d := r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "main", ExecID: tc.execID})).get(t)
			if d.ExitStatus != tc.code {
				t.Errorf("exec delete %d", d.ExitStatus)
			}
		})
	}
	spec, _ := typeurl.MarshalAnyToProto(&specs.Process{Args: []string{"/missing.wasm"}})
	_, err := h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "main", ExecID: "bad", Spec: spec})
	if err = errgrpc.ToNative(err); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "/missing.wasm") {
		t.Errorf("exec of a missing module: %v", err)
	}

	// A long-running exec shows up in Pids.
	spec, _ = typeurl.MarshalAnyToProto(&specs.Process{Args: []string{"/wasi.wasm", "loop"}})
	r(h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "main", ExecID: "spin", Spec: spec})).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "main", ExecID: "spin"})).get(t)
	time.Sleep(200 * time.Millisecond)
	pids := r(h.client.Pids(h.ctx, &taskAPI.PidsRequest{ID: "main"})).get(t)
	if len(pids.Processes) != 2 {
		t.Errorf("pids: %v, want init and one exec", pids.Processes)
	}

	sr := r(h.client.Stats(h.ctx, &taskAPI.StatsRequest{ID: "main"})).get(t)
	v, err := typeurl.UnmarshalAny(sr.Stats)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(*cg2.Metrics)
	if !ok {
		t.Fatalf("stats type %T, want cgroup v2 Metrics", v)
	}
	if m.Memory.Usage < 2*65536 || m.Memory.Usage%65536 != 0 {
		t.Errorf("memory usage %d: want the linear memory of two instances (page multiple)", m.Memory.Usage)
	}
	if m.Pids.Current != 2 {
		t.Errorf("pids.current %d", m.Pids.Current)
	}
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	procUsec := uint64(ru.Utime.Sec+ru.Stime.Sec)*1e6 + uint64(ru.Utime.Usec+ru.Stime.Usec)
	// The exec spun for 200 ms of wall time on a shared 2-core machine: it
	// got some CPU, and never more than the whole process used.
	if m.CPU.UsageUsec < 5_000 || m.CPU.UsageUsec > procUsec {
		t.Errorf("cpu %d µs: want between 5 ms and the process's %d µs", m.CPU.UsageUsec, procUsec)
	}
	// A thread's CPU clock has no user/kernel split: the split stays
	// unknown (zero) instead of repeating the total in user_usec; linear
	// memory is anonymous, all of it.
	if m.CPU.UserUsec != 0 || m.CPU.SystemUsec != 0 || m.Memory.Anon != m.Memory.Usage || m.Memory.File != 0 {
		t.Errorf("cpu user %d system %d, memory anon %d file %d: want 0, 0, the usage %d and 0",
			m.CPU.UserUsec, m.CPU.SystemUsec, m.Memory.Anon, m.Memory.File, m.Memory.Usage)
	}
	u := h.svc.Usage()
	if u.Tasks != 2 || u.MemoryBytes != m.Memory.Usage {
		t.Errorf("usage %+v vs stats %d", u, m.Memory.Usage)
	}

	// Shutdown with tasks remaining stops nothing.
	r(h.client.Shutdown(h.ctx, &taskAPI.ShutdownRequest{ID: "main"})).get(t)
	if st := r(h.client.State(h.ctx, &taskAPI.StateRequest{ID: "main"})).get(t); st.Status != task.Status_RUNNING {
		t.Fatalf("Shutdown stopped the task: %v", st)
	}
	// Delete of a running task is refused.
	if _, err := h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "main"}); !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("delete running: %v", err)
	}
	r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "main", Signal: 9, All: true})).get(t)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	r(h.client.Wait(ctx, &taskAPI.WaitRequest{ID: "main", ExecID: "spin"})).get(t)
	if w := r(h.client.Wait(ctx, &taskAPI.WaitRequest{ID: "main"})).get(t); w.ExitStatus != 137 {
		t.Errorf("exit %d", w.ExitStatus)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "main"})).get(t)
	ensureUnmounted(t, b)
}

func TestCreateErrorsLeaveNothing(t *testing.T) {
	h := newHarness(t)
	hello := map[string][]byte{"hello.wasm": fixtures.Hello}
	for _, tc := range []struct {
		name  string
		args  []string
		files map[string][]byte
		opts  []bundleOpt
		tweak func(*taskAPI.CreateTaskRequest)
		is    func(error) bool
		says  []string
	}{
		{"no-module", []string{"/app.wasm"}, hello, nil, nil, errdefs.IsNotFound, []string{"/app.wasm", "entrypoint"}},
		{"truncated", []string{"/m.wasm"}, map[string][]byte{"m.wasm": fixtures.Truncated}, nil, nil, errdefs.IsInvalidArgument, []string{"/m.wasm", "WebAssembly"}},
		{"not-wasm", []string{"/bin/sh"}, map[string][]byte{"bin/sh": fixtures.NotWasm}, nil, nil, errdefs.IsInvalidArgument, []string{"/bin/sh", "vm isolation"}},
		{"no-function", []string{"/hello.wasm#nope"}, hello, nil, nil, errdefs.IsNotFound, []string{"nope", "_start"}},
		{"escape", []string{"/../../hello.wasm"}, hello, nil, nil, errdefs.IsInvalidArgument, []string{".."}},
		{"memory", []string{"/big.wasm"}, map[string][]byte{"big.wasm": fixtures.BigMem}, []bundleOpt{withMemoryLimit(1 << 20)}, nil, errdefs.IsResourceExhausted, []string{"memory limit"}},
		{"terminal", []string{"/hello.wasm"}, hello, nil, func(r *taskAPI.CreateTaskRequest) { r.Terminal = true }, errdefs.IsNotImplemented, []string{"terminal"}},
		{"bad-stdout", []string{"/hello.wasm"}, hello, nil, func(r *taskAPI.CreateTaskRequest) { r.Stdout = "/nonexistent/fifo" }, func(error) bool { return true }, []string{"/nonexistent/fifo"}},
		{"bad-mount", []string{"/hello.wasm"}, hello, nil, func(r *taskAPI.CreateTaskRequest) { r.Rootfs[0].Source = "/nonexistent/src" }, func(error) bool { return true }, []string{"mount rootfs"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := h.bundle(t, tc.name, tc.args, tc.files, tc.opts...)
			if tc.tweak != nil {
				tc.tweak(b.req)
			}
			before := fdsUnder(t, h.dir)
			_, err := h.client.Create(h.ctx, b.req)
			err = errgrpc.ToNative(err)
			// FIFO opens and closes finish on goroutines: poll, with a
			// deadline, until the descriptors are back (a leak never is).
			after := fdsUnder(t, h.dir)
			for deadline := time.Now().Add(10 * time.Second); strings.Join(after, " ") != strings.Join(before, " ") && time.Now().Before(deadline); after = fdsUnder(t, h.dir) {
				time.Sleep(10 * time.Millisecond) // polling interval
			}
			if strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("files open under the test dir before Create: %v, 10 s after it failed: %v", before, after)
			}
			if err == nil || !tc.is(err) {
				t.Fatalf("create: %v (kind not as expected)", err)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			ensureUnmounted(t, b)
			if _, err := h.client.State(h.ctx, &taskAPI.StateRequest{ID: tc.name}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
				t.Errorf("task left registered: %v", err)
			}
			// The id is free again.
			b.req.Terminal, b.req.Stdout = false, b.stdout.path
		})
	}
	if n := h.svc.Usage().Tasks; n != 0 {
		t.Errorf("%d tasks left", n)
	}
	h.events.waitTopics(t) // no event for a failed create
}

// fdsUnder lists (sorted) what this process's open file descriptors point
// to under dir: FIFOs, bundle files, the rootfs.
func fdsUnder(t *testing.T, dir string) []string {
	t.Helper()
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range e {
		if l, err := os.Readlink("/proc/self/fd/" + x.Name()); err == nil && strings.HasPrefix(l, dir) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

func TestUnsupportedAndUnknown(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "u", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	r(h.client.Create(h.ctx, b.req)).get(t)
	if _, err := h.client.Create(h.ctx, b.req); !errdefs.IsAlreadyExists(errgrpc.ToNative(err)) {
		t.Errorf("second create: %v", err)
	}
	for name, call := range map[string]func() error{
		"resize": func() error {
			_, err := h.client.ResizePty(h.ctx, &taskAPI.ResizePtyRequest{ID: "u", Width: 80, Height: 24})
			return err
		},
		"pause": func() error { _, err := h.client.Pause(h.ctx, &taskAPI.PauseRequest{ID: "u"}); return err },
		"checkpoint": func() error {
			_, err := h.client.Checkpoint(h.ctx, &taskAPI.CheckpointTaskRequest{ID: "u"})
			return err
		},
		"sigstop": func() error {
			_, err := h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "u", Signal: uint32(syscall.SIGSTOP)})
			return err
		},
	} {
		if err := errgrpc.ToNative(call()); !errdefs.IsNotImplemented(err) {
			t.Errorf("%s: %v, want NotImplemented", name, err)
		}
	}
	for name, call := range map[string]func() error{
		"state": func() error { _, err := h.client.State(h.ctx, &taskAPI.StateRequest{ID: "x"}); return err },
		"start": func() error { _, err := h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "x"}); return err },
		"kill":  func() error { _, err := h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "x", Signal: 9}); return err },
		"wait":  func() error { _, err := h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "u", ExecID: "x"}); return err },
	} {
		if err := errgrpc.ToNative(call()); !errdefs.IsNotFound(err) {
			t.Errorf("%s of unknown: %v, want NotFound", name, err)
		}
	}
	c := r(h.client.Connect(h.ctx, &taskAPI.ConnectRequest{ID: "u"})).get(t)
	if c.TaskPid != uint32(os.Getpid()) || c.Version == "" {
		t.Errorf("connect: %v", c)
	}
	// Deleting a created task that never ran deletes it as killed.
	d := r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "u"})).get(t)
	if d.ExitStatus != 137 {
		t.Errorf("delete of created: %v", d)
	}
	ensureUnmounted(t, b)
	if b.stdout.wait(t) != "" {
		t.Error("a task that never ran wrote output")
	}
}

// imageResolver stands in for containerd's content store: it serves the
// module of an image whose module is a wasm layer, not a rootfs file.
type imageResolver struct{ module []byte }

func (r imageResolver) ResolveModule(_ context.Context, ns, id string) ([]byte, string, error) {
	if ns != testNS {
		return nil, "", errors.New("wrong namespace " + ns)
	}
	if r.module == nil {
		return nil, "", errdefs.ErrNotFound
	}
	return r.module, "", nil
}

func TestModuleFromImageLayers(t *testing.T) {
	h := newHarness(t, wasmtask.WithModuleResolver(imageResolver{module: fixtures.WASI}))
	b := h.bundle(t, "layer", []string{"/app.wasm", "read", "/data.txt"}, map[string][]byte{"data.txt": []byte("from the rootfs")})
	if code := h.runToExit(t, b); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if got := b.stdout.wait(t); got != "from the rootfs" {
		t.Errorf("stdout %q", got)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "layer"})).get(t)

	// Execs in such a container run its module by its entrypoint path;
	// other paths that are not in the rootfs are refused.
	b = h.bundle(t, "layer2", []string{"/app.wasm", "sleep", "600"}, nil)
	r(h.client.Create(h.ctx, b.req)).get(t)
	r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "layer2"})).get(t)
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"/app.wasm", "exit", "4"}, true},
		{[]string{"/bin/ls"}, false},
	} {
		spec, _ := typeurl.MarshalAnyToProto(&specs.Process{Args: tc.args, Cwd: "/"})
		_, err := h.client.Exec(h.ctx, &taskAPI.ExecProcessRequest{ID: "layer2", ExecID: tc.args[0], Spec: spec})
		if tc.ok != (err == nil) {
			t.Errorf("exec %v: %v", tc.args, err)
		}
		if err == nil {
			r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "layer2", ExecID: tc.args[0]})).get(t)
			if w := r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "layer2", ExecID: tc.args[0]})).get(t); w.ExitStatus != 4 {
				t.Errorf("exec exit %d", w.ExitStatus)
			}
		} else if !strings.Contains(err.Error(), "/app.wasm") {
			t.Errorf("exec error does not name the container's module: %v", err)
		}
	}
	r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: "layer2", Signal: 9})).get(t)
	r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "layer2"})).get(t)
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "layer2"})).get(t)

	h2 := newHarness(t, wasmtask.WithModuleResolver(imageResolver{}))
	b2 := h2.bundle(t, "nolayer", []string{"/app.wasm"}, nil)
	_, err := h2.client.Create(h2.ctx, b2.req)
	if err = errgrpc.ToNative(err); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "wasm layer") {
		t.Errorf("no module anywhere: %v", err)
	}
	ensureUnmounted(t, b2)
}

func TestRestoreAfterRestart(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "old", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	r(h.client.Create(h.ctx, b.req)).get(t)
	recs := wasmtask.Records(h.svc)
	raw, _ := json.Marshal(recs)
	var back []wasmtask.TaskRecord
	json.Unmarshal(raw, &back)

	// A fresh service (the sandboxer restarted) learns of the task.
	h2 := newHarness(t)
	h2.svc.Restore(back, 137, time.Now())
	// A second restart before containerd deleted the task must still know
	// its mount.
	if recs := wasmtask.Records(h2.svc); len(recs) != 1 || recs[0].Rootfs != filepath.Join(b.dir, "rootfs") {
		t.Errorf("records after restore: %+v", recs)
	}
	w := r(h2.client.Wait(h2.ctx, &taskAPI.WaitRequest{ID: "old"})).get(t)
	if w.ExitStatus != 137 {
		t.Errorf("restored exit %d", w.ExitStatus)
	}
	r(h2.client.Delete(h2.ctx, &taskAPI.DeleteRequest{ID: "old"})).get(t)
	if mounted(t, filepath.Join(b.dir, "rootfs")) {
		t.Error("restored delete did not unmount the rootfs")
	}
}

// TestConcurrentCreateSameID: exactly one of several concurrent creates of
// one id wins; calls racing with the create see NotFound, never a crash.
func TestConcurrentCreateSameID(t *testing.T) {
	h := newHarness(t)
	b := h.bundle(t, "dup", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello})
	const n = 6
	errs := make(chan error, n)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				h.client.State(h.ctx, &taskAPI.StateRequest{ID: "dup"})
				h.client.Stats(h.ctx, &taskAPI.StatsRequest{ID: "dup"})
			}
		}
	}()
	for range n {
		go func() { _, err := h.client.Create(h.ctx, b.req); errs <- errgrpc.ToNative(err) }()
	}
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errdefs.IsAlreadyExists(err):
			t.Errorf("create: %v", err)
		}
	}
	close(stop)
	if ok != 1 {
		t.Fatalf("%d creates succeeded, want 1", ok)
	}
	r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "dup"})).get(t)
	ensureUnmounted(t, b)
}

// TestDeleteUnmountsWhatCreateMounted: Delete detaches the mounts Create
// stacked on the rootfs directory, those in its subdirectories with them,
// and nothing else: a mount that was there before Create (here a tmpfs)
// stays.
func TestDeleteUnmountsWhatCreateMounted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mounts func(b *bundle, extra string) []*types.Mount
	}{
		{"one bind", func(b *bundle, _ string) []*types.Mount { return b.rootfs }},
		{"two stacked binds", func(b *bundle, _ string) []*types.Mount {
			return []*types.Mount{b.rootfs[0], {Type: "bind", Source: b.src, Options: []string{"rbind", "ro"}}}
		}},
		{"bind and a bind in a subdirectory", func(b *bundle, extra string) []*types.Mount {
			return []*types.Mount{b.rootfs[0], {Type: "bind", Source: extra, Target: "sub", Options: []string{"rbind", "ro"}}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.bundle(t, "m", []string{"/hello.wasm"}, map[string][]byte{"hello.wasm": fixtures.Hello, "sub/.keep": nil})
			extra := filepath.Join(h.dir, "extra")
			if err := os.Mkdir(extra, 0o755); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(b.dir, "rootfs")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
			b.req.Rootfs = tc.mounts(b, extra)
			if code := h.runToExit(t, b); code != 0 {
				t.Fatalf("exit %d", code)
			}
			r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "m"})).get(t)
			ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || ms[0].Mountpoint != root || ms[0].FSType != "tmpfs" {
				var got []string
				for _, m := range ms {
					got = append(got, m.Mountpoint+" ("+m.FSType+")")
				}
				t.Errorf("mounts at and below the rootfs after Delete: %v, want only the tmpfs that was there before Create", got)
			}
		})
	}
}

// TestRootfsMountPoint: Create makes the rootfs mount point when the bundle
// has none, and removes it again when it fails; one that was there before
// stays either way.
func TestRootfsMountPoint(t *testing.T) {
	hello := map[string][]byte{"hello.wasm": fixtures.Hello}
	for _, tc := range []struct {
		name    string
		premade bool
		args    []string
		source  string // replaces the bind's source when set
		wantErr bool
	}{
		{"made, runs", false, []string{"/hello.wasm"}, "", false},
		{"made, module missing", false, []string{"/nope.wasm"}, "", true},
		{"made, mount source missing", false, []string{"/hello.wasm"}, "/nonexistent/kuasar-src", true},
		{"there, runs", true, []string{"/hello.wasm"}, "", false},
		{"there, module missing", true, []string{"/nope.wasm"}, "", true},
		{"there, mount source missing", true, []string{"/hello.wasm"}, "/nonexistent/kuasar-src", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.bundle(t, "mp", tc.args, hello)
			root := filepath.Join(b.dir, "rootfs")
			if tc.premade {
				if err := os.Mkdir(root, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tc.source != "" {
				b.req.Rootfs[0].Source = tc.source
			}
			_, err := h.client.Create(h.ctx, b.req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("create: %v, want an error: %v", err, tc.wantErr)
			}
			if err == nil {
				if !mounted(t, root) {
					t.Fatal("rootfs not mounted after Create")
				}
				r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: "mp"})).get(t)
				r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "mp"})).get(t)
				r(h.client.Delete(h.ctx, &taskAPI.DeleteRequest{ID: "mp"})).get(t)
			}
			ensureUnmounted(t, b)
			_, serr := os.Stat(root)
			if want := tc.premade || err == nil; (serr == nil) != want {
				t.Errorf("rootfs directory exists: %v, want %v", serr == nil, want)
			}
		})
	}
}
