package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// Sandboxer is a kuasar-sandboxer process serving its Sandbox API on a
// private socket, with a client connected to it.
type Sandboxer struct {
	Proc *Process
	// Dir holds the sockets, config, bundles and the "image" directory
	// bind-mounted as each task's rootfs (hello.wasm, wasi.wasm).
	Dir, Sock, DebugSock, State, Image string
	Client                             api.ControllerClient
	conn                               *grpc.ClientConn
	// Events receives the task events when no containerd does.
	Events *EventSink
	// Bundles holds the bundles Bundle writes: on tmpfs when the machine
	// has one, as containerd keeps its bundles in its state directory
	// (/run/containerd/io.containerd.runtime.v2.task/NS/ID, tmpfs), so that
	// the runtime's files in them (its exit record) cost what they cost
	// under containerd, not a disk file system's journal.
	Bundles string
}

// SandboxerOptions configures StartSandboxer.
type SandboxerOptions struct {
	// Containerd and ContainerdTTRPC are containerd's sockets when the
	// sandboxer serves a containerd (the CRI scenarios).
	Containerd, ContainerdTTRPC string
	// VMTemplates keeps the sandboxer's default of building the QEMU VM
	// template of the default sizes at start-up (vm-density needs it).
	// Without it the sandboxer runs with [hypervisor.qemu] template =
	// "off": that build runs a TCG QEMU on a whole core for 3 to 8 s after
	// start-up, beside whatever Wasm scenario is being measured, and no
	// Wasm scenario uses a VM.
	VMTemplates bool
}

// StartSandboxer starts bin (kuasar-sandboxer) with its sockets and config
// under dir and its state on tmpfs (/dev/shm, as /run is on a host) when
// the machine has one.
func StartSandboxer(ctx context.Context, bin, dir string, o SandboxerOptions) (_ *Sandboxer, retErr error) {
	s := &Sandboxer{Dir: dir, Sock: filepath.Join(dir, "k.sock"), DebugSock: filepath.Join(dir, "kd.sock"), Image: filepath.Join(dir, "image")}
	if err := os.MkdirAll(s.Image, 0o755); err != nil {
		return nil, err
	}
	for _, name := range []string{"hello", "wasi"} {
		if _, err := fixtures.WriteFile(s.Image, name); err != nil {
			return nil, err
		}
	}
	state, err := os.MkdirTemp("/dev/shm", "kbs")
	if err != nil {
		state = filepath.Join(dir, "state")
	}
	s.State = state
	bundles, err := os.MkdirTemp("/dev/shm", "kbb")
	if err != nil {
		bundles = filepath.Join(dir, "b")
	}
	s.Bundles = bundles
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	cfg := "[sandboxer]\nlog_level = \"warn\"\n"
	if o.Containerd != "" {
		cfg += fmt.Sprintf("containerd_address = %q\ncontainerd_ttrpc_address = %q\n", o.Containerd, o.ContainerdTTRPC)
	} else {
		// No containerd: the harness receives the events itself, and
		// image lookups go to a socket nothing serves (bundles name
		// their module by path).
		sock := filepath.Join(dir, "ev.sock")
		if s.Events, err = ServeEvents(sock); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("containerd_address = %q\ncontainerd_ttrpc_address = %q\n", filepath.Join(dir, "none.sock"), sock)
	}
	if !o.VMTemplates {
		cfg += "\n[hypervisor.qemu]\ntemplate = \"off\"\n"
	}
	cfgPath := filepath.Join(dir, "kuasar.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	raiseOpenFiles()
	s.Proc, err = Start(nil, bin, "--config", cfgPath, "--listen", s.Sock, "--state-dir", s.State, "--debug-listen", s.DebugSock)
	if err != nil {
		return nil, err
	}
	if err := WaitSocket(ctx, s.Sock, 30*time.Second, s.Proc); err != nil {
		return nil, err
	}
	s.conn, err = grpc.NewClient("unix://"+s.Sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	s.Client = api.NewControllerClient(s.conn)
	return s, nil
}

// ShippedOpenFiles is the RLIMIT_NOFILE configs/kuasar-sandboxer.service
// gives the sandboxer (LimitNOFILE).
const ShippedOpenFiles = 1048576

// raiseOpenFiles raises this process's RLIMIT_NOFILE, which the sandboxer
// inherits, to what the shipped systemd unit gives it (where allowed: as
// root), so that density is measured as deployed rather than cut off by a
// shell's limit (4 fds per idle sandbox: 20,000 stops at 5,000 sandboxes).
// Setting it explicitly also stops Go from restoring the original soft
// limit in children.
func raiseOpenFiles() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= ShippedOpenFiles {
		return
	}
	want := unix.Rlimit{Cur: ShippedOpenFiles, Max: max(lim.Max, ShippedOpenFiles)}
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &want) != nil {
		want = unix.Rlimit{Cur: lim.Max, Max: lim.Max}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &want)
	}
}

// OpenFilesLimit is the RLIMIT_NOFILE the sandboxer gets (after
// raiseOpenFiles): the hard limit, to which it raises its soft one.
func OpenFilesLimit() uint64 {
	raiseOpenFiles()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Max
}

// Close stops the sandboxer and removes its state, its VM templates'
// memory included.
func (s *Sandboxer) Close() {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.Proc != nil {
		s.Proc.Stop(10 * time.Second)
	}
	if s.Events != nil {
		s.Events.Close()
	}
	// VM templates the sandboxer built keep their memory on /dev/shm,
	// outside its state directory (about 100 MiB each): remove them too.
	if s.State != "" {
		if tb, err := vmbackend.New(context.Background(), vmbackend.WithTemplateDir(filepath.Join(s.State, "vm-templates"))); err == nil {
			tb.RemoveTemplates(context.Background())
		}
	}
	for _, d := range []string{s.State, s.Bundles} {
		if d != "" && strings.HasPrefix(d, "/dev/shm/") {
			UnmountUnder(d)
			os.RemoveAll(d)
		}
	}
}

// Bundle writes an OCI bundle in Bundles for a task
// running args (paths in the image directory: /hello.wasm, /wasi.wasm) and
// returns the request that creates task id from it, its rootfs the image
// directory bind-mounted read-only. stdin, when set, is the task's stdin.
func (s *Sandboxer) Bundle(name, id string, args []string, stdin string) (*taskAPI.CreateTaskRequest, error) {
	dir := filepath.Join(s.Bundles, name)
	if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
		return nil, err
	}
	b, err := json.Marshal(&specs.Spec{Version: specs.Version, Root: &specs.Root{Path: "rootfs"},
		Process: &specs.Process{Args: args, Cwd: "/"}})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return nil, err
	}
	return &taskAPI.CreateTaskRequest{ID: id, Bundle: dir, Stdin: stdin,
		Rootfs: []*types.Mount{{Type: "bind", Source: s.Image, Options: []string{"rbind", "ro"}}}}, nil
}

// Namespace is the containerd namespace the harness's sandboxes are in.
const Namespace = "kuasar-bench"

// StartSandbox creates and starts sandbox id and returns a Task API client
// for it and a function closing that client.
func (s *Sandboxer) StartSandbox(ctx context.Context, id string) (taskAPI.TTRPCTaskService, func(), error) {
	return s.StartSandboxAnnotated(ctx, id, nil)
}

// StartSandboxAnnotated is StartSandbox of a sandbox created with the pod
// annotations annot (kuasar.io/isolation: vm for a VM sandbox, whose VM is
// running when it returns).
func (s *Sandboxer) StartSandboxAnnotated(ctx context.Context, id string, annot map[string]string) (taskAPI.TTRPCTaskService, func(), error) {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	if _, err := s.Client.Create(ctx, &api.ControllerCreateRequest{SandboxID: id, Annotations: annot}); err != nil {
		return nil, nil, fmt.Errorf("sandbox create: %w", err)
	}
	st, err := s.Client.Start(ctx, &api.ControllerStartRequest{SandboxID: id})
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox start: %w", err)
	}
	p, ok := strings.CutPrefix(st.Address, "ttrpc+unix://")
	if !ok {
		return nil, nil, fmt.Errorf("sandbox %s: task address %q is not ttrpc+unix", id, st.Address)
	}
	c, err := net.Dial("unix", p)
	if err != nil {
		return nil, nil, err
	}
	cl := ttrpc.NewClient(c)
	return taskAPI.NewTTRPCTaskClient(cl), func() { cl.Close() }, nil
}

// StartTask creates and starts the task of req in a sandbox.
func StartTask(ctx context.Context, tasks taskAPI.TTRPCTaskService, req *taskAPI.CreateTaskRequest) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	if _, err := tasks.Create(ctx, req); err != nil {
		return fmt.Errorf("task create: %w", err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: req.ID}); err != nil {
		return fmt.Errorf("task start: %w", err)
	}
	return nil
}

// RunTask creates and starts the task of req in a sandbox, waits for its
// exit, deletes it and returns its exit status.
func RunTask(ctx context.Context, tasks taskAPI.TTRPCTaskService, req *taskAPI.CreateTaskRequest) (uint32, error) {
	if err := StartTask(ctx, tasks, req); err != nil {
		return 0, err
	}
	ctx = namespaces.WithNamespace(ctx, Namespace)
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: req.ID})
	if err != nil {
		return 0, fmt.Errorf("task wait: %w", err)
	}
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: req.ID}); err != nil {
		return 0, fmt.Errorf("task delete: %w", err)
	}
	// containerd removes a task's bundle once the task is deleted and
	// writes a new one for the next: the harness reuses its bundles, so it
	// removes the one file the runtime left in it, its exit record, lest
	// every later task in the bundle find one there and take the runtime's
	// path for a reused bundle (a temporary file and a rename), which no
	// task under containerd takes.
	if err := os.Remove(filepath.Join(req.Bundle, exitrecord.FileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("remove the exit record of task %s from its bundle: %w", req.ID, err)
	}
	return w.ExitStatus, nil
}

// StopSandbox stops and shuts down sandbox id.
func (s *Sandboxer) StopSandbox(ctx context.Context, id string) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	if _, err := s.Client.Stop(ctx, &api.ControllerStopRequest{SandboxID: id}); err != nil {
		return fmt.Errorf("sandbox stop: %w", err)
	}
	if _, err := s.Client.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
		return fmt.Errorf("sandbox shutdown: %w", err)
	}
	return nil
}

// RunOnce is one sandbox's whole life with one task, as containerd drives
// it: sandbox Create, Start, task Create, Start, Wait, Delete, sandbox
// Stop, Shutdown. It fails unless the task exits 0.
func (s *Sandboxer) RunOnce(ctx context.Context, id string, req *taskAPI.CreateTaskRequest) error {
	tasks, closeFn, err := s.StartSandbox(ctx, id)
	if err != nil {
		return err
	}
	code, err := RunTask(ctx, tasks, req)
	closeFn()
	if err != nil {
		return err
	}
	if err := s.StopSandbox(ctx, id); err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("task %s exited %d", req.ID, code)
	}
	return nil
}

// debugGet fetches path from the sandboxer's debug socket (net/http/pprof).
func (s *Sandboxer) debugGet(ctx context.Context, path string) (string, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.DebugSock)
	}}, Timeout: 60 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sandboxer"+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("sandboxer debug %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// Goroutines is the sandboxer's goroutine count, read from its debug
// socket's /debug/pprof/goroutine.
func (s *Sandboxer) Goroutines(ctx context.Context) (int, error) {
	body, err := s.debugGet(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	// "goroutine profile: total N"
	line, _, _ := strings.Cut(body, "\n")
	_, n, ok := strings.Cut(strings.TrimSpace(line), "total ")
	if !ok {
		return 0, fmt.Errorf("unexpected goroutine profile header %q", line)
	}
	return strconv.Atoi(n)
}

// GoMemory is where the sandboxer's Go runtime memory is, in bytes.
type GoMemory struct {
	// HeapInuse is the heap's spans in use (the guests' linear memories
	// included: wazero allocates them on the Go heap).
	HeapInuse uint64
	// Stacks is the goroutine stacks.
	Stacks uint64
}

// Memory reads the sandboxer's runtime.MemStats from its heap profile.
func (s *Sandboxer) Memory(ctx context.Context) (GoMemory, error) {
	body, err := s.debugGet(ctx, "/debug/pprof/heap?debug=1")
	if err != nil {
		return GoMemory{}, err
	}
	var m GoMemory
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.HeapInuse, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			f, _, _ := strings.Cut(v, " ")
			m.Stacks, _ = strconv.ParseUint(f, 10, 64)
		}
	}
	if m.HeapInuse == 0 {
		return m, fmt.Errorf("the sandboxer's heap profile has no runtime.MemStats")
	}
	return m, nil
}
