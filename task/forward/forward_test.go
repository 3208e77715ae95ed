package forward_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/task/agent"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/forward"
)

// TestMain lets the test binary act as the agent's set-up helper: the
// in-process agent re-executes /proc/self/exe to set up each container.
func TestMain(m *testing.M) {
	if agent.IsHelper() {
		agent.RunHelper()
		return
	}
	os.Exit(m.Run())
}

// busybox is Debian's busybox-static: it runs in a rootfs without
// libraries.
const busybox = "/bin/busybox"

// host is a forward.Host over a real agent served in this process. Its
// "shared directory" is a host directory the agent reads directly (agent
// and host share one file system here); Prepare adds PREPARED=yes to the
// container's environment so that a test sees the agent ran what Prepare
// wrote, not the host bundle.
type host struct {
	tasks  taskAPI.TTRPCTaskService
	agent  agentapi.AgentService
	shared string

	mu          sync.Mutex
	down        bool
	failPrepare error
	prepared    []string
	released    []string
}

func (h *host) Agent() (taskAPI.TTRPCTaskService, agentapi.AgentService, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return nil, nil, fmt.Errorf("test guest is down: %w", errdefs.ErrFailedPrecondition)
	}
	return h.tasks, h.agent, nil
}

func (h *host) Prepare(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (string, error) {
	h.mu.Lock()
	h.prepared = append(h.prepared, r.ID)
	fail := h.failPrepare
	h.mu.Unlock()
	dir := filepath.Join(h.shared, r.ID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if fail != nil {
		return "", fail // leaves dir: Release must be called
	}
	spec.Process.Env = append(spec.Process.Env, "PREPARED=yes")
	spec.Root.Path = filepath.Join(r.Bundle, spec.Root.Path)
	b, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

func (h *host) Release(ctx context.Context, id string) error {
	h.mu.Lock()
	h.released = append(h.released, id)
	h.mu.Unlock()
	return os.RemoveAll(filepath.Join(h.shared, id))
}

func (h *host) ShimPid() uint32 { return 4242 }

func (h *host) calls() (prepared, released []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.prepared), slices.Clone(h.released)
}

// recorder keeps the topics published, in order.
type recorder struct {
	mu     sync.Mutex
	topics []string
}

func (r *recorder) Publish(ns, topic string, ev events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.topics)
}

type rig struct {
	t     *testing.T
	host  *host
	rec   *recorder
	fwd   *forward.Forwarder
	tasks taskAPI.TTRPCTaskService // the forwarder, over ttrpc
}

// serve serves register's services on one end of a socketpair and returns
// a client on the other.
// serveAgent runs the guest agent in this process through its public entry
// (agent.Run on a unix socket, as for development outside a VM) and returns
// a client connected to it. The agent stops when the test ends.
func serveAgent(t *testing.T) *ttrpc.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "fwd") // short: a unix socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, agent.Options{Listen: sock, Version: "test"}) }()
	var conn net.Conn
	deadline := time.Now().Add(30 * time.Second)
	for {
		d := net.Dialer{Timeout: time.Second}
		if conn, err = d.Dial("unix", sock); err == nil {
			break
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("agent stopped before it served: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("agent did not serve %s within 30s: %v", sock, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval of the per-probe deadline above
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		client.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop within 30s of its context's end")
		}
		os.RemoveAll(dir)
	})
	return client
}

func serve(t *testing.T, register func(*ttrpc.Server)) *ttrpc.Client {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	srvConn, cliConn := conn(fds[0]), conn(fds[1])
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	register(srv)
	l := &oneConn{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- srvConn
	go srv.Serve(context.Background(), l)
	client := ttrpc.NewClient(cliConn)
	t.Cleanup(func() {
		client.Close()
		srv.Close()
	})
	return client
}

// oneConn is a net.Listener that hands out one connection.
type oneConn struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *oneConn) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *oneConn) Addr() net.Addr { return &net.UnixAddr{Name: "socketpair", Net: "unix"} }

func newRig(t *testing.T) *rig {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(busybox); err != nil {
		t.Fatalf("%s missing (apt-get install busybox-static): %v", busybox, err)
	}
	ac := serveAgent(t)
	h := &host{tasks: taskAPI.NewTTRPCTaskClient(ac), agent: agentapi.NewAgentClient(ac), shared: t.TempDir()}
	rec := &recorder{}
	f := forward.New(forward.Config{Sandbox: "sb", Namespace: "k8s.io", Host: h, Events: rec})
	fc := serve(t, func(s *ttrpc.Server) { taskAPI.RegisterTTRPCTaskService(s, f) })
	r := &rig{t: t, host: h, rec: rec, fwd: f, tasks: taskAPI.NewTTRPCTaskClient(fc)}
	t.Cleanup(func() {
		ctx := context.Background()
		f.KillAll(ctx, time.Second)
		f.Gone()
	})
	return r
}

// bundle writes a host bundle: a busybox rootfs and a config.json running
// args.
func bundle(t *testing.T, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "echo", "sleep", "true"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "marker"), []byte("inside-rootfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}}},
	}
	b, _ := json.Marshal(&spec)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fifos makes containerd's side of a process's stdio: stdin and stdout
// FIFOs opened as cio does, and stderr as a file:// log.
type fifos struct {
	stdin, stdout, stderr string
	in                    io.WriteCloser
	out                   io.ReadCloser
}

func newFifos(t *testing.T) *fifos {
	t.Helper()
	dir := t.TempDir()
	f := &fifos{stdin: filepath.Join(dir, "in"), stdout: filepath.Join(dir, "out"), stderr: "file://" + filepath.Join(dir, "logs", "err.log")}
	ctx := context.Background()
	var err error
	if f.in, err = fifo.OpenFifo(ctx, f.stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		t.Fatal(err)
	}
	if f.out, err = fifo.OpenFifo(ctx, f.stdout, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.in.Close(); f.out.Close() })
	return f
}

func (f *fifos) errLog() string {
	b, _ := os.ReadFile(strings.TrimPrefix(f.stderr, "file://"))
	return string(b)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// anyProcess wraps a JSON runtime-spec Process as containerd sends it in
// ExecProcessRequest.Spec.
func anyProcess(b []byte) *anypb.Any {
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
}

func isKind(err, kind error) bool { return errors.Is(errgrpc.ToNative(err), kind) }

// waitTopic polls the recorder until topic was published (the exit event
// comes from a background Wait).
func (r *rig) waitTopic(topic string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(r.rec.get(), topic) {
		if time.Now().After(deadline) {
			r.t.Fatalf("%s not published; got %v", topic, r.rec.get())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLifecycle drives one container and one exec through the forwarder
// and checks each intercept: the agent ran the bundle Prepare wrote,
// stdio went through the FIFOs and the file:// log, State reports the host
// bundle, Connect the host's pid, Delete releases the bundle, and the
// events come in containerd's order.
func TestLifecycle(t *testing.T) {
	r := newRig(t)
	ctx := ctxT(t)
	bd := bundle(t, "sh", "-c", "echo $PREPARED; cat /marker; read x; echo got $x >&2; exit 3")
	io1 := newFifos(t)
	cr, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bd, Stdin: io1.stdin, Stdout: io1.stdout, Stderr: io1.stderr})
	if err != nil {
		t.Fatal(err)
	}
	if cr.Pid == 0 {
		t.Fatal("create returned pid 0")
	}
	if st, err := r.tasks.State(ctx, &taskAPI.StateRequest{ID: "c1"}); err != nil || st.Bundle != bd || st.Pid != cr.Pid {
		t.Fatalf("State = %v, %v; want the host bundle %s and pid %d", st, err, bd, cr.Pid)
	}
	if c, err := r.tasks.Connect(ctx, &taskAPI.ConnectRequest{ID: "c1"}); err != nil || c.ShimPid != 4242 {
		t.Fatalf("Connect = %v, %v; want the host's ShimPid 4242", c, err)
	}
	if _, err := r.tasks.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(io1.in, "hello\n"); err != nil {
		t.Fatal(err)
	}
	io1.in.Close()
	w, err := r.tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("Wait = %v, %v; want exit status 3", w, err)
	}
	// Wait returned after the pumps drained: the output is complete and
	// the host ends are closed (end of file).
	out, err := io.ReadAll(io1.out)
	if err != nil || string(out) != "yes\ninside-rootfs\n" {
		t.Fatalf("stdout %q, %v; want the Prepared env and the rootfs marker", out, err)
	}
	if got := io1.errLog(); got != "got hello\n" {
		t.Fatalf("stderr log %q, want stdin echoed", got)
	}
	r.waitTopic(runtime.TaskExitEventTopic)

	// An exec in a second, running container.
	bd2 := bundle(t, "sleep", "60")
	if _, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bd2}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2"}); err != nil {
		t.Fatal(err)
	}
	io2 := newFifos(t)
	pspec, _ := json.Marshal(&specs.Process{Args: []string{"sh", "-c", "echo exec-out; echo exec-err >&2"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := r.tasks.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Stdout: io2.stdout, Stderr: io2.stderr, Spec: anyProcess(pspec)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if w, err := r.tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"}); err != nil || w.ExitStatus != 0 {
		t.Fatalf("exec Wait = %v, %v", w, err)
	}
	if out, _ := io.ReadAll(io2.out); string(out) != "exec-out\n" {
		t.Fatalf("exec stdout %q", out)
	}
	if got := io2.errLog(); got != "exec-err\n" {
		t.Fatalf("exec stderr log %q", got)
	}
	if n := r.fwd.Count(); n != 3 {
		t.Fatalf("Count = %d, want 3 (two containers, one exec)", n)
	}
	if _, err := r.tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if _, released := r.host.calls(); len(released) != 0 {
		t.Fatalf("deleting an exec released %v", released)
	}

	d, err := r.tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	if err != nil || d.ExitStatus != 3 {
		t.Fatalf("Delete = %v, %v", d, err)
	}
	prepared, released := r.host.calls()
	if !slices.Equal(prepared, []string{"c1", "c2"}) || !slices.Equal(released, []string{"c1"}) {
		t.Fatalf("Prepare calls %v, Release calls %v; want [c1 c2] and [c1]", prepared, released)
	}
	if _, err := os.Stat(filepath.Join(r.host.shared, "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("c1's prepared bundle is still there after Delete: %v", err)
	}
	if _, err := r.tasks.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "c2"}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown did not reach the agent: c2 still runs.
	if st, err := r.tasks.State(ctx, &taskAPI.StateRequest{ID: "c2"}); err != nil || st.Status.String() != "RUNNING" {
		t.Fatalf("c2 after Shutdown: %v, %v; want RUNNING", st, err)
	}
	got := r.rec.get()
	want := []string{runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExitEventTopic,
		runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExecAddedEventTopic, runtime.TaskExecStartedEventTopic}
	// The exec's exit may come before or after its delete; c1's delete
	// is the last event.
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) || got[len(got)-1] != runtime.TaskDeleteEventTopic {
		t.Fatalf("events %v; want %v, ..., %s", got, want, runtime.TaskDeleteEventTopic)
	}
}

// TestCreateFailures: a Create the forwarder refuses, or that fails
// after Prepare, leaves nothing behind: no container in the forwarder or
// the agent, the prepared bundle released.
func TestCreateFailures(t *testing.T) {
	r := newRig(t)
	ctx := ctxT(t)
	bd := bundle(t, "true")
	for _, tc := range []struct {
		name        string
		req         *taskAPI.CreateTaskRequest
		failPrepare error
		want        error
		prepared    bool
	}{
		{"id with a slash", &taskAPI.CreateTaskRequest{ID: "../x", Bundle: bd}, nil, errdefs.ErrInvalidArgument, false},
		{"terminal", &taskAPI.CreateTaskRequest{ID: "t", Bundle: bd, Terminal: true}, nil, errdefs.ErrNotImplemented, false},
		{"no bundle spec", &taskAPI.CreateTaskRequest{ID: "nospec", Bundle: t.TempDir()}, nil, errdefs.ErrNotFound, false},
		{"prepare fails", &taskAPI.CreateTaskRequest{ID: "prep", Bundle: bd}, fmt.Errorf("no room: %w", errdefs.ErrResourceExhausted), errdefs.ErrResourceExhausted, true},
		{"stdout missing", &taskAPI.CreateTaskRequest{ID: "noout", Bundle: bd, Stdout: filepath.Join(t.TempDir(), "gone")}, nil, errdefs.ErrNotFound, true},
		{"bad log URI", &taskAPI.CreateTaskRequest{ID: "baduri", Bundle: bd, Stdout: "binary:///bin/logger"}, nil, errdefs.ErrNotImplemented, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.host.mu.Lock()
			r.host.failPrepare, r.host.prepared, r.host.released = tc.failPrepare, nil, nil
			r.host.mu.Unlock()
			_, err := r.tasks.Create(ctx, tc.req)
			if !isKind(err, tc.want) {
				t.Fatalf("Create = %v, want %v", err, tc.want)
			}
			prepared, released := r.host.calls()
			if tc.prepared != (len(prepared) == 1) || !slices.Equal(prepared, released) {
				t.Fatalf("Prepare calls %v, Release calls %v; want Release after every Prepare", prepared, released)
			}
			if entries, _ := os.ReadDir(r.host.shared); len(entries) != 0 {
				t.Fatalf("left behind in the shared directory: %v", entries)
			}
			if _, err := r.host.tasks.State(ctx, &taskAPI.StateRequest{ID: tc.req.ID}); !isKind(err, errdefs.ErrNotFound) {
				t.Fatalf("the agent knows the failed container: %v", err)
			}
			if r.fwd.Count() != 0 {
				t.Fatalf("the forwarder counts %d processes", r.fwd.Count())
			}
		})
	}
	// The id of a failed Create is free again.
	r.host.mu.Lock()
	r.host.failPrepare = nil
	r.host.mu.Unlock()
	if _, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "prep", Bundle: bd}); err != nil {
		t.Fatalf("Create after a failed one: %v", err)
	}
	if _, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "prep", Bundle: bd}); !isKind(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Create of one id: %v, want AlreadyExists", err)
	}
}

// TestGuestDownAndRecovered: with the guest gone every call fails with
// FailedPrecondition; Delete of a container the forwarder did not create
// (a sandboxer restart) still releases its bundle.
func TestGuestDownAndRecovered(t *testing.T) {
	r := newRig(t)
	ctx := ctxT(t)
	bd := bundle(t, "true")
	// Created behind the forwarder's back, as before a restart.
	if err := os.Mkdir(filepath.Join(r.host.shared, "old"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := r.host.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "old", Bundle: bd}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "old"}); err != nil {
		t.Fatal(err)
	}
	if _, released := r.host.calls(); !slices.Equal(released, []string{"old"}) {
		t.Fatalf("Release calls %v, want [old]", released)
	}

	r.host.mu.Lock()
	r.host.down = true
	r.host.mu.Unlock()
	for name, call := range map[string]func() error{
		"Create": func() error {
			_, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "x", Bundle: bd})
			return err
		},
		"Pids": func() error { _, err := r.tasks.Pids(ctx, &taskAPI.PidsRequest{ID: "x"}); return err },
		"Kill": func() error { _, err := r.tasks.Kill(ctx, &taskAPI.KillRequest{ID: "x", Signal: 9}); return err },
		"Wait": func() error { _, err := r.tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "x"}); return err },
	} {
		if err := call(); !isKind(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("%s with the guest down = %v, want FailedPrecondition", name, err)
		}
	}
}

// TestOnExitRunsBeforeExitEvent: an exit hook (the sandboxer writes its
// exit record in one) runs before /tasks/exit is published, and a Wait of
// the process inside it returns the exit at once; a hook added after the
// exit runs at once, and an unknown container is NotFound.
func TestOnExitRunsBeforeExitEvent(t *testing.T) {
	r := newRig(t)
	ctx := ctxT(t)
	fifo := newFifos(t)
	if _, err := r.tasks.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: bundle(t, "sh", "-c", "exit 5"),
		Stdin: fifo.stdin, Stdout: fifo.stdout, Stderr: fifo.stderr}); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		exitEvents int
		status     uint32
		err        error
	}
	ran := make(chan seen, 1)
	if err := r.fwd.OnExit("c", func() {
		w, err := r.fwd.Wait(ctx, &taskAPI.WaitRequest{ID: "c"})
		ran <- seen{exitEvents: countTopic(r.rec.get(), runtime.TaskExitEventTopic), status: w.GetExitStatus(), err: err}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.tasks.Start(ctx, &taskAPI.StartRequest{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	fifo.in.Close()
	r.waitTopic(runtime.TaskExitEventTopic)
	select {
	case s := <-ran:
		if s.exitEvents != 0 || s.err != nil || s.status != 5 {
			t.Fatalf("exit hook saw %d exit events published, Wait %d, %v; want none yet and exit 5", s.exitEvents, s.status, s.err)
		}
	default:
		t.Fatal("the exit hook did not run by the time the exit was published")
	}
	late := false
	if err := r.fwd.OnExit("c", func() { late = true }); err != nil || !late {
		t.Fatalf("hook added after the exit: ran %v, err %v; want it run at once", late, err)
	}
	if err := r.fwd.OnExit("nosuch", func() {}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("OnExit of an unknown container: %v, want NotFound", err)
	}
}

// countTopic counts topic among topics.
func countTopic(topics []string, topic string) int {
	n := 0
	for _, tp := range topics {
		if tp == topic {
			n++
		}
	}
	return n
}
