package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
)

// TestMain lets the test binary act as the agent's set-up helper: the
// Service re-executes /proc/self/exe with HelperInit.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperInit {
		RunHelper()
		return
	}
	os.Exit(m.Run())
}

// busyboxPath is Debian's busybox-static, statically linked so it runs in
// a rootfs without libraries.
const busyboxPath = "/bin/busybox"

var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "uname", "hostname", "ls", "head", "true", "false", "id", "readlink", "wc"}

type env struct {
	t      testing.TB
	svc    *Service
	tasks  taskapi.TTRPCTaskService
	agent  agentapi.AgentService
	reaper *guestinit.Reaper
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates namespaces and mounts")
	}
	if _, err := os.Stat(busyboxPath); err != nil {
		t.Fatalf("%s missing (apt-get install busybox-static, or run make deps): %v", busyboxPath, err)
	}
}

// newEnv serves a Service and an AgentService over a real ttrpc connection
// on a unix socket in a temp dir.
func newEnv(t testing.TB, opts ...Option) *env {
	t.Helper()
	requireRoot(t)
	ctx := context.Background()
	reaper := guestinit.GlobalReaper(ctx)
	svc := New(reaper, opts...)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	taskapi.RegisterTTRPCTaskService(srv, svc)
	agentapi.RegisterAgentService(srv, NewAgentService(svc, WithVersion("test")))
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		// Kill and delete whatever a failed test left behind.
		svc.mu.Lock()
		var ids []string
		for id := range svc.containers {
			ids = append(ids, id)
		}
		svc.mu.Unlock()
		for _, id := range ids {
			_ = svc.kill(&taskapi.KillRequest{ID: id, Signal: 9, All: true})
			_, _ = svc.Wait(ctx, &taskapi.WaitRequest{ID: id})
			_, _ = svc.Delete(ctx, &taskapi.DeleteRequest{ID: id})
		}
		client.Close()
		srv.Close()
	})
	return &env{t: t, svc: svc, tasks: taskapi.NewTTRPCTaskClient(client), agent: agentapi.NewAgentClient(client), reaper: reaper}
}

type bundleOpt func(spec *specs.Spec, rootfs string)

// makeBundle writes a bundle: rootfs with busybox and its applets, a
// /marker file, and a config.json running args in new namespaces.
func makeBundle(t testing.TB, args []string, opts ...bundleOpt) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "marker"), []byte("inside-rootfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "kuasar-ctr",
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin", "HOME=/"},
			Cwd:  "/",
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace},
			{Type: specs.IPCNamespace}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/host-path"},
		}},
	}
	for _, o := range opts {
		o(spec, rootfs)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run creates and starts a container with stdout and stderr captured.
func (e *env) run(id, bundle string, stdin bool) uint32 {
	e.t.Helper()
	ctx := ctxT(e.t)
	req := &taskapi.CreateTaskRequest{ID: id, Bundle: bundle, Stdout: "/host/fifo/out", Stderr: "/host/fifo/err"}
	if stdin {
		req.Stdin = "/host/fifo/in"
	}
	cr, err := e.tasks.Create(ctx, req)
	if err != nil {
		e.t.Fatalf("create %s: %v", id, err)
	}
	sr, err := e.tasks.Start(ctx, &taskapi.StartRequest{ID: id})
	if err != nil {
		e.t.Fatalf("start %s: %v", id, err)
	}
	if sr.Pid != cr.Pid {
		e.t.Fatalf("start pid %d != create pid %d: the process must keep its pid", sr.Pid, cr.Pid)
	}
	return cr.Pid
}

// readAll reads a stream over the agent API until EOF (OutOfRange).
func (e *env) readAll(id, execID string, fd int) string {
	e.t.Helper()
	ctx := ctxT(e.t)
	var sb strings.Builder
	for {
		req := &agentapi.ReadStreamRequest{ContainerId: id, ExecId: execID, Len: 7}
		var resp *agentapi.ReadStreamResponse
		var err error
		if fd == 1 {
			resp, err = e.agent.ReadStdout(ctx, req)
		} else {
			resp, err = e.agent.ReadStderr(ctx, req)
		}
		if status.Code(err) == codes.OutOfRange {
			return sb.String()
		}
		if err != nil {
			e.t.Fatalf("read fd %d of %s/%s: %v", fd, id, execID, err)
		}
		if len(resp.Data) > 7 {
			e.t.Fatalf("read returned %d bytes, asked for at most 7", len(resp.Data))
		}
		sb.Write(resp.Data)
	}
}

func (e *env) wait(id, execID string) uint32 {
	e.t.Helper()
	w, err := e.tasks.Wait(ctxT(e.t), &taskapi.WaitRequest{ID: id, ExecID: execID})
	if err != nil {
		e.t.Fatalf("wait %s/%s: %v", id, execID, err)
	}
	return w.ExitStatus
}

func (e *env) delete(id string) *taskapi.DeleteResponse {
	e.t.Helper()
	d, err := e.tasks.Delete(ctxT(e.t), &taskapi.DeleteRequest{ID: id})
	if err != nil {
		e.t.Fatalf("delete %s: %v", id, err)
	}
	return d
}

func (e *env) exec(id, execID string, stdin bool, args ...string) {
	e.t.Helper()
	b, _ := json.Marshal(&specs.Process{Args: args, Env: []string{"PATH=/bin"}, Cwd: "/"})
	req := &taskapi.ExecProcessRequest{ID: id, ExecID: execID, Stdout: "out", Stderr: "err",
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}}
	if stdin {
		req.Stdin = "in"
	}
	if _, err := e.tasks.Exec(ctxT(e.t), req); err != nil {
		e.t.Fatalf("exec %s/%s: %v", id, execID, err)
	}
	if _, err := e.tasks.Start(ctxT(e.t), &taskapi.StartRequest{ID: id, ExecID: execID}); err != nil {
		e.t.Fatalf("start exec %s/%s: %v", id, execID, err)
	}
}

// zombies lists children of this process that are zombies.
func zombies(t testing.TB) []int {
	t.Helper()
	self := os.Getpid()
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isKind(err error, kind error) bool {
	return errors.Is(errgrpc.ToNative(err), kind)
}
