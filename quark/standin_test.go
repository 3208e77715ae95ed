package quark

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/ttrpc"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// The tests below run the backend against a STAND-IN quark
// (quark/internal/standin), built here: Quark itself cannot be obtained on
// this machine. The stand-in honours Quark's sandbox command line and
// serves the Task API v2 by running the containers with runc; it proves
// the contract, not Quark.

var (
	standinOnce sync.Once
	standinDir  string
	standinErr  error
)

// standin builds the stand-in as <dir>/quark and returns that path, and a
// Quark configuration in sandbox mode. It skips without root or runc.
func standin(t *testing.T) (Config, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the stand-in quark and runs containers with runc")
	}
	if os.Geteuid() != 0 {
		t.Skip("the stand-in runs containers with runc: needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the stand-in runs containers with runc: apt-get install runc")
	}
	standinOnce.Do(func() {
		standinDir, standinErr = os.MkdirTemp("", "quark-standin")
		if standinErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(standinDir, "quark"), "./internal/standin").CombinedOutput()
		if err != nil {
			standinErr = &buildError{err, out}
			return
		}
		standinErr = os.WriteFile(filepath.Join(standinDir, "config.json"), []byte(`{"ShimMode":false,"Sandboxed":true}`), 0o600)
	})
	if standinErr != nil {
		t.Fatal(standinErr)
	}
	t.Logf("using the STAND-IN quark %s (not Quark: Quark cannot be obtained here)", filepath.Join(standinDir, "quark"))
	return Config{Binary: filepath.Join(standinDir, "quark"), ConfigFile: filepath.Join(standinDir, "config.json")}, standinDir
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string {
	return "building the stand-in quark: " + e.err.Error() + "\n" + string(e.out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if standinDir != "" {
		os.RemoveAll(standinDir)
	}
	os.Exit(code)
}

// sandbox is a backend.Sandbox with a state directory of its own (short:
// the task socket's path must fit a unix address).
func sandbox(t *testing.T, id string) backend.Sandbox {
	t.Helper()
	dir, err := os.MkdirTemp("", "qk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return backend.Sandbox{
		ID: id, Namespace: "quark-test", StateDir: dir, Hostname: "qhost",
		Annotations: map[string]string{"kuasar.io/isolation": "quark"},
		Resources:   backend.Resources{MemoryLimitBytes: 256 << 20, CPUQuota: 50000, CPUPeriod: 100000},
	}
}

// start starts sb on b and shuts it down at the end of the test.
func start(t *testing.T, b *Backend, sb backend.Sandbox) *Instance {
	t.Helper()
	// The stand-in's runc containers outlive it when a test fails midway
	// (Quark's die with it): remove them.
	t.Cleanup(func() { exec.Command("runc", "--root", "/run/containerd/runc/quark-test", "delete", "-f", "c1").Run() })
	t.Cleanup(func() { exec.Command("runc", "--root", "/run/containerd/runc/quark-test", "delete", "-f", "c2").Run() })
	inst, err := b.Start(context.Background(), sb)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { inst.Shutdown(context.Background()) })
	return inst.(*Instance)
}

// TestStartCommandLine checks the exact command line the backend runs,
// its working directory, the sandbox bundle it writes, and that Shutdown
// leaves nothing behind.
func TestStartCommandLine(t *testing.T) {
	cfg, _ := standin(t)
	rec := filepath.Join(t.TempDir(), "argv.json")
	t.Setenv("QUARK_STANDIN_RECORD", rec)
	sb := sandbox(t, "sb-cmdline")
	sb.NetnsPath = "/var/run/netns/test-ns"
	inst := start(t, New(cfg), sb)

	var got struct {
		Argv []string `json:"argv"`
		Cwd  string   `json:"cwd"`
	}
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(sb.StateDir, "sandbox")
	want := []string{"-r", bundle, "sandbox", "--task-socket", filepath.Join(sb.StateDir, "quark-task.sock"), "--id", "sb-cmdline", "--pid-file", filepath.Join(sb.StateDir, "pid")}
	if !reflect.DeepEqual(got.Argv[1:], want) {
		t.Errorf("command line\n got %q\nwant %q", got.Argv[1:], want)
	}
	if got.Cwd != bundle {
		t.Errorf("working directory %q, want the bundle %q", got.Cwd, bundle)
	}
	pidb, err := os.ReadFile(filepath.Join(sb.StateDir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(int(inst.Pid())) != strings.TrimSpace(string(pidb)) || inst.Pid() == 0 {
		t.Errorf("instance pid %d, pid file %q", inst.Pid(), pidb)
	}
	if !inst.Alive() {
		t.Error("liveness probe: the sandbox process is not alive")
	}
	var sp specs.Spec
	if b, err = os.ReadFile(filepath.Join(bundle, "config.json")); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sp); err != nil {
		t.Fatal(err)
	}
	if sp.Hostname != "qhost" || sp.Root.Path != "rootfs" || len(sp.Linux.Namespaces) != 1 || sp.Linux.Namespaces[0].Path != sb.NetnsPath ||
		*sp.Linux.Resources.Memory.Limit != 256<<20 || *sp.Linux.Resources.CPU.Quota != 50000 {
		t.Errorf("sandbox spec: %s", b)
	}
	if fi, err := os.Stat(filepath.Join(bundle, "rootfs", "dev")); err != nil || !fi.IsDir() {
		t.Errorf("sandbox rootfs/dev: %v", err)
	}

	pid := int(inst.Pid())
	if err := inst.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := startTime(pid); err == nil {
		t.Errorf("the sandbox process %d still runs after Shutdown", pid)
	}
	if _, err := os.Stat(filepath.Join(sb.StateDir, "quark-task.sock")); err == nil {
		t.Error("the task socket is left after Shutdown")
	}
	if _, err := os.Stat(bundle); err == nil {
		t.Error("the bundle is left after Shutdown")
	}
	ex, err := inst.Wait(context.Background())
	if err != nil || ex.Status != exitKilled {
		t.Errorf("Wait after Shutdown: %+v, %v", ex, err)
	}
}

// TestBridgeSpeaksV2 proves the bridge: the stand-in, like Quark, serves
// only containerd.task.v2.Task, which a v3 client cannot reach while the
// bridge does, with the v3 messages unchanged.
func TestBridgeSpeaksV2(t *testing.T) {
	cfg, _ := standin(t)
	sb := sandbox(t, "sb-bridge")
	inst := start(t, New(cfg), sb)
	ctx := namespaces.WithNamespace(context.Background(), "quark-test")
	for _, tc := range []struct {
		name   string
		tasks  func(*ttrpc.Client) taskAPI.TTRPCTaskService
		wantOK bool
	}{
		{"v3 client", taskAPI.NewTTRPCTaskClient, false},
		{"v2 bridge", NewV2Bridge, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dialUnix(filepath.Join(sb.StateDir, "quark-task.sock"))
			if err != nil {
				t.Fatal(err)
			}
			c := ttrpc.NewClient(conn)
			defer c.Close()
			resp, err := tc.tasks(c).Connect(ctx, &taskAPI.ConnectRequest{ID: "none"})
			if !tc.wantOK {
				if err == nil || !strings.Contains(err.Error(), "containerd.task.v3.Task") {
					t.Fatalf("Connect through v3 = %v, %v: want the service unknown to the server", resp, err)
				}
				return
			}
			// The stand-in's runc task service answers with its own pid: the
			// request went through and was understood.
			if err != nil || resp.ShimPid != inst.Pid() {
				t.Fatalf("Connect through the bridge = %v, %v; want the sandbox process's pid %d", resp, err, inst.Pid())
			}
		})
	}
}

// TestContainerThroughStandin runs a container through the backend's Task
// API (forwarder, bridge, stand-in, runc): output through the stdio
// bind-mounted into the bundle, the exit status, the task events, and
// nothing left mounted after Delete and Shutdown.
func TestContainerThroughStandin(t *testing.T) {
	cfg, _ := standin(t)
	pub := &recorder{}
	sb := sandbox(t, "sb-run")
	inst := start(t, New(cfg, WithPublisher(pub)), sb)
	ctx := namespaces.WithNamespace(context.Background(), "quark-test")
	dir := t.TempDir()
	bundle := busyboxBundle(t, dir, "sh", "-c", "echo out-through-quark; echo err-through-quark >&2; exit 3")
	stdout, stderr := newFifo(t, filepath.Join(dir, "stdout")), newFifo(t, filepath.Join(dir, "stderr"))
	tasks := inst.Tasks()
	cr, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Stdout: stdout.path, Stderr: stderr.path})
	if err != nil {
		t.Fatalf("Create: %v\n%s", err, tail(filepath.Join(sb.StateDir, "quark.log"), 2000))
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	wr, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if wr.ExitStatus != 3 {
		t.Errorf("exit status %d, want 3", wr.ExitStatus)
	}
	if got := stdout.String(); got != "out-through-quark\n" {
		t.Errorf("stdout %q", got)
	}
	if got := stderr.String(); got != "err-through-quark\n" {
		t.Errorf("stderr %q", got)
	}
	if m, err := inst.Metrics(ctx); err != nil || m.Tasks != 1 || m.MemoryBytes == 0 {
		t.Errorf("Metrics: %+v, %v", m, err)
	}
	cbundle := filepath.Join(sb.StateDir, "sandbox", "c1")
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(cbundle)); len(ms) != 3 { // rootfs, stdout, stderr
		t.Errorf("mounts in the container's bundle while it exists: %d, want 3", len(ms))
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(cbundle)); len(ms) != 0 {
		t.Errorf("mounts left after Delete: %d", len(ms))
	}
	if _, err := os.Stat(cbundle); err == nil {
		t.Error("the container's bundle is left after Delete")
	}
	if err := inst.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if got := pub.topics(); !reflect.DeepEqual(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if cr.Pid == 0 {
		t.Error("Create reported pid 0")
	}
}

// TestExecThroughStandin runs an exec in a running container: its stdio is
// bind-mounted into the container's bundle for the exec alone and released
// at its Delete; Stop then kills the container and Quark.
func TestExecThroughStandin(t *testing.T) {
	cfg, _ := standin(t)
	sb := sandbox(t, "sb-exec")
	inst := start(t, New(cfg), sb)
	ctx := namespaces.WithNamespace(context.Background(), "quark-test")
	dir := t.TempDir()
	bundle := busyboxBundle(t, dir, "sh", "-c", "exec /bin/busybox sleep 600")
	tasks := inst.Tasks()
	// containerd's runc task service, behind the stand-in, wants both
	// outputs or neither, as CRI always gives.
	logOut, logErr := newFifo(t, filepath.Join(dir, "stdout")), newFifo(t, filepath.Join(dir, "stderr"))
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle, Stdout: logOut.path, Stderr: logErr.path}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	out, outErr := newFifo(t, filepath.Join(dir, "exec-out")), newFifo(t, filepath.Join(dir, "exec-err"))
	spec, _ := json.Marshal(specs.Process{Args: []string{"/bin/busybox", "echo", "exec-through-quark"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := tasks.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Stdout: out.path, Stderr: outErr.path, Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: spec}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	execOut := filepath.Join(sb.StateDir, "sandbox", "c2", "e1-stdout")
	if ms, _ := mountinfo.GetMounts(mountinfo.SingleEntryFilter(execOut)); len(ms) != 1 {
		t.Errorf("the exec's stdout is not bind-mounted at %s", execOut)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatalf("Start exec: %v", err)
	}
	if wr, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"}); err != nil || wr.ExitStatus != 0 {
		t.Fatalf("Wait exec: %v, %v", wr, err)
	}
	if got := out.String(); got != "exec-through-quark\n" {
		t.Errorf("exec output %q", got)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatalf("Delete exec: %v", err)
	}
	if _, err := os.Stat(execOut); err == nil {
		t.Errorf("the exec's stdout %s is left after its Delete", execOut)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(sb.StateDir, "sandbox", "c2"))); len(ms) != 3 { // rootfs, stdout, stderr
		t.Errorf("mounts in the container's bundle after the exec's Delete: %d, want 3", len(ms))
	}
	if err := inst.Stop(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if ms, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(sb.StateDir, "sandbox"))); len(ms) != 0 {
		t.Errorf("mounts left after Stop: %d", len(ms))
	}
}

// TestStdinThroughStandin: a container's stdin FIFO, bind-mounted like
// its outputs, reaches the process; closing it ends the process's input.
func TestStdinThroughStandin(t *testing.T) {
	cfg, _ := standin(t)
	sb := sandbox(t, "sb-stdin")
	inst := start(t, New(cfg), sb)
	ctx := namespaces.WithNamespace(context.Background(), "quark-test")
	dir := t.TempDir()
	bundle := busyboxBundle(t, dir, "sh", "-c", "while read l; do echo got-$l; done")
	stdin := filepath.Join(dir, "stdin")
	if err := syscall.Mkfifo(stdin, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := fifo.OpenFifo(ctx, stdin, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut := newFifo(t, filepath.Join(dir, "stdout")), newFifo(t, filepath.Join(dir, "stderr"))
	tasks := inst.Tasks()
	if _, err := tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle, Stdin: stdin, Stdout: out.path, Stderr: errOut.path}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := w.Write([]byte("a\nb\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := tasks.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c1", Stdin: true}); err != nil {
		t.Fatalf("CloseIO: %v", err)
	}
	if wr, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"}); err != nil || wr.ExitStatus != 0 {
		t.Fatalf("Wait: %v, %v", wr, err)
	}
	if got := out.String(); got != "got-a\ngot-b\n" {
		t.Errorf("stdout %q", got)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
}

// TestRecover re-attaches to a running Quark after a "sandboxer restart"
// (a new Backend, from the checkpoint), and reports a sandbox whose
// process is gone, or whose pid now names another process, as exited.
func TestRecover(t *testing.T) {
	cfg, _ := standin(t)
	sb := sandbox(t, "sb-recover")
	first := start(t, New(cfg), sb)
	cp := first.Checkpoint()
	ctx := namespaces.WithNamespace(context.Background(), "quark-test")

	inst, err := New(cfg).Recover(ctx, sb, cp)
	if err != nil {
		t.Fatal(err)
	}
	again := inst.(*Instance)
	if again.Pid() != first.Pid() || !again.Alive() {
		t.Fatalf("recovered pid %d (alive %v), want %d", again.Pid(), again.Alive(), first.Pid())
	}
	// The recovered instance reaches Quark's Task API.
	if resp, err := again.Tasks().Connect(ctx, &taskAPI.ConnectRequest{ID: "none"}); err != nil || resp.ShimPid != first.Pid() {
		t.Errorf("Connect through the recovered instance: %v, %v; want shim pid %d", resp, err, first.Pid())
	}

	// A pid whose start time differs is another process: exited.
	var rec processRecord
	json.Unmarshal(cp, &rec)
	rec.StartTime++
	stale, _ := json.Marshal(rec)
	gone, err := New(cfg).Recover(ctx, sb, stale)
	if err != nil {
		t.Fatal(err)
	}
	if gone.Pid() != 0 {
		t.Errorf("recovered a process whose start time differs: pid %d", gone.Pid())
	}
	if ex, err := gone.Wait(ctx); err != nil || ex.Status != exitKilled {
		t.Errorf("Wait of a gone sandbox: %+v, %v", ex, err)
	}

	// Stop is SIGKILL to the pid; every instance holding it sees the exit.
	if err := again.Stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := first.Wait(wctx); err != nil {
		t.Fatalf("the first instance did not see the kill: %v", err)
	}
	if again.Alive() {
		t.Error("liveness probe: alive after Stop")
	}
	after, err := New(cfg).Recover(ctx, sb, cp)
	if err != nil || after.Pid() != 0 {
		t.Errorf("Recover after the kill: pid %d, %v; want an exited instance", after.Pid(), err)
	}
	if err := after.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of an exited instance: %v", err)
	}
}

// TestStartFailures: a quark that fails, or writes no pid, fails Start
// with its output and leaves no process and no socket.
func TestStartFailures(t *testing.T) {
	cfg, dir := standin(t)
	for _, tc := range []struct {
		name, script, want string
	}{
		{"quark fails", "#!/bin/sh\necho no KVM here >&2\nexit 1\n", "no KVM here"},
		{"no pid file", "#!/bin/sh\nexit 0\n", "no pid file"},
		{"pid file holds junk", "#!/bin/sh\nfor a; do last=$p; p=$a; done\necho junk > \"$p\"\n", "not a pid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "quark")
			if err := os.WriteFile(bin, []byte(tc.script), 0o755); err != nil {
				t.Fatal(err)
			}
			sb := sandbox(t, "sb-fail")
			_, err := New(Config{Binary: bin, ConfigFile: cfg.ConfigFile}).Start(context.Background(), sb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(sb.StateDir, "quark-task.sock")); err == nil {
				t.Error("a socket is left")
			}
		})
	}
	// A host that fails the checks never runs quark.
	_, err := New(Config{Binary: filepath.Join(dir, "absent"), ConfigFile: cfg.ConfigFile}).Start(context.Background(), sandbox(t, "sb-nobin"))
	if !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start without a binary: %v, want FailedPrecondition", err)
	}
}

// busyboxBundle writes a bundle in dir whose rootfs holds busybox and
// whose process runs args.
func busyboxBundle(t *testing.T, dir string, args ...string) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static: %v", err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink("busybox", filepath.Join(rootfs, "bin", "sh"))
	sp := specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts:  []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
		}},
	}
	b, _ := json.Marshal(sp)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fifoOut is a FIFO whose content is collected, as containerd collects a
// task's output.
type fifoOut struct {
	path string
	buf  bytes.Buffer
	wg   sync.WaitGroup
}

func newFifo(t *testing.T, path string) *fifoOut {
	t.Helper()
	f, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	o := &fifoOut{path: path}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		io.Copy(&o.buf, f)
		f.Close()
	}()
	return o
}

func (o *fifoOut) String() string { o.wg.Wait(); return o.buf.String() }

// recorder keeps the topics of the task events published.
type recorder struct {
	mu sync.Mutex
	t  []string
}

func (r *recorder) Publish(_ context.Context, topic string, _ events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.t = append(r.t, topic)
	return nil
}

func (r *recorder) topics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.t...)
}
