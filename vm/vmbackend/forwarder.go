package vmbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/vm"
)

// forwarder is the sandbox's Task API: it prepares each container's bundle
// in the shared directory, rewrites paths to the guest's view, forwards
// the call to the agent and pumps stdio.
type forwarder struct {
	inst *Instance

	mu         sync.Mutex
	containers map[string]*container
	// waits bounds the background Waits that publish /tasks/exit;
	// vmGone cancels it.
	waits     context.Context
	stopWaits context.CancelFunc
}

type container struct {
	id       string
	dir      string // host: <shared>/<id>
	rootfs   string // host: <shared>/<id>/rootfs (a mount point)
	bundle   string // host bundle containerd gave us
	procs    map[string]*pumps
	deleting bool
	ns       string // containerd namespace its events go to
}

var _ taskAPI.TTRPCTaskService = (*forwarder)(nil)

func newForwarder(i *Instance) *forwarder {
	f := &forwarder{inst: i, containers: map[string]*container{}}
	f.waits, f.stopWaits = context.WithCancel(context.Background())
	return f
}

func (f *forwarder) client() (taskAPI.TTRPCTaskService, error) {
	f.inst.mu.Lock()
	defer f.inst.mu.Unlock()
	if f.inst.task == nil || f.inst.exit != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("sandbox %s is not running: %w", f.inst.sb.ID, errdefs.ErrFailedPrecondition))
	}
	return f.inst.task, nil
}

func (f *forwarder) agent() agentapi.AgentService {
	f.inst.mu.Lock()
	defer f.inst.mu.Unlock()
	return f.inst.agent
}

func (f *forwarder) count() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.containers {
		n += len(c.procs)
	}
	return uint32(n)
}

// guestBundle is where the guest sees a container's bundle.
func guestBundle(id string) string { return vm.GuestSharedDir + "/" + id }

// Stdio replaces the host FIFOs of a process with in-memory streams
// (RunWorkload); nil fields mean "no such stream".
type stdio struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// Create prepares the bundle in the shared directory and forwards.
func (f *forwarder) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return f.create(ctx, r, nil)
}

func (f *forwarder) create(ctx context.Context, r *taskAPI.CreateTaskRequest, io *stdio) (_ *taskAPI.CreateTaskResponse, retErr error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	if r.ID == "" || r.ID != filepath.Base(r.ID) || r.ID == "." || r.ID == ".." {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container id %q must be a single path element: %w", r.ID, errdefs.ErrInvalidArgument))
	}
	if r.Terminal {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s asks for a terminal: TTYs are not supported in VM sandboxes yet, run it without -t: %w", r.ID, errdefs.ErrNotImplemented))
	}
	lg := log.G(ctx).WithField("sandbox", f.inst.sb.ID).WithField("container", r.ID)
	f.mu.Lock()
	if _, ok := f.containers[r.ID]; ok {
		f.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists))
	}
	c := &container{id: r.ID, dir: filepath.Join(f.inst.spec.SharedDir, r.ID), bundle: r.Bundle, procs: map[string]*pumps{}, ns: f.namespace(ctx)}
	c.rootfs = filepath.Join(c.dir, "rootfs")
	f.containers[r.ID] = c
	f.mu.Unlock()
	defer func() {
		if retErr != nil {
			f.mu.Lock()
			delete(f.containers, r.ID)
			f.mu.Unlock()
			if err := cleanupDir(c.dir); err != nil {
				lg.WithError(err).Warn("vm: cleaning up failed create")
			}
		}
	}()

	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// The shared directory is writable by the guest: everything below it
	// is created and used through fds (shareDir), never by name.
	cdir, err := makeShareDir(ctx, f.inst.spec.SharedDir, r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	defer cdir.Close()
	// The guest finds the rootfs at <bundle>/rootfs, or, for the container
	// whose rootfs came as a disk at boot, at its overlay in the guest.
	guestRoot := "rootfs"
	if blk := f.inst.block; blk != nil && blk.cid == r.ID && len(r.Rootfs) == 0 {
		guestRoot = blk.guestRoot() // nothing to mount on the host
	} else if err := f.mountRootfs(r, spec, cdir); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if spec.Root == nil {
		spec.Root = &specs.Root{}
	}
	spec.Root.Path = guestRoot
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := writeNew(cdir, "config.json", b); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: writing its config.json in the shared directory: %w", r.ID, err))
	}

	fwd := proto.Clone(r).(*taskAPI.CreateTaskRequest)
	fwd.Bundle = guestBundle(r.ID)
	fwd.Rootfs = nil
	if io != nil {
		fwd.Stdin, fwd.Stdout, fwd.Stderr = marker(io.stdin != nil, "stdin"), marker(io.stdout != nil, "stdout"), marker(io.stderr != nil, "stderr")
	}
	resp, err := cl.Create(ctx, fwd)
	if err != nil {
		return nil, err
	}
	p, err := f.startPumps(ctx, r.ID, "", r.Stdin, r.Stdout, r.Stderr, io)
	if err != nil {
		_, _ = cl.Delete(context.WithoutCancel(ctx), &taskAPI.DeleteRequest{ID: r.ID})
		return nil, errgrpc.ToGRPC(err)
	}
	f.mu.Lock()
	c.procs[""] = p
	f.mu.Unlock()
	f.publish(c.ns, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         resp.GetPid(),
	})
	return resp, nil
}

// mountRootfs mounts a container's rootfs at rootfs/ in its directory of
// the shared directory (cdir): the request's rootfs mounts, or else a bind
// mount of the bundle's root.path. The mount point is created and mounted
// on through its fd, so a guest that swaps it for a symlink cannot make the
// host mount anywhere else.
func (f *forwarder) mountRootfs(r *taskAPI.CreateTaskRequest, spec *specs.Spec, cdir *fsroot.Root) error {
	target, err := mountPoint(cdir, "rootfs")
	if err != nil {
		return fmt.Errorf("container %s: rootfs mount point in the shared directory: %w", r.ID, err)
	}
	defer unix.Close(target)
	if len(r.Rootfs) > 0 {
		if err := mount.All(mount.FromProto(r.Rootfs), procFd(target)); err != nil {
			return fmt.Errorf("mounting rootfs of container %s: %w", r.ID, err)
		}
		return nil
	}
	src := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		src = spec.Root.Path
	}
	srcFd, err := openBundleDir(r.Bundle, src)
	if err != nil {
		return fmt.Errorf("container %s: rootfs %s is not a directory (no rootfs mounts in the request and no root.path in the bundle): %w: %w", r.ID, src, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(srcFd)
	if err := unix.Mount(procFd(srcFd), procFd(target), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting rootfs %s of container %s: %w", src, r.ID, err)
	}
	return nil
}

func marker(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

func readSpec(bundle string) (*specs.Spec, error) {
	r, err := fsroot.Open(bundle)
	if err != nil {
		return nil, fmt.Errorf("opening the bundle: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	defer r.Close()
	fl, err := r.Open("config.json")
	if err != nil {
		return nil, fmt.Errorf("reading the bundle's config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	defer fl.Close()
	b, err := io.ReadAll(fl)
	if err != nil {
		return nil, fmt.Errorf("reading the bundle's config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("bundle config.json %s: %w: %w", filepath.Join(bundle, "config.json"), err, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

// cleanupDir unmounts everything under dir, then removes dir. It never
// removes anything while a mount is left below dir: that mount may be a
// container's real rootfs (an image snapshot, or the user's directory in
// RunWorkload), and RemoveAll would delete its contents.
func cleanupDir(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return removeUnmounted(dir)
}

// removeUnmounted removes dir unless something is still mounted below it.
func removeUnmounted(dir string) error {
	if left := mountPoints(dir); len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %v: %w", dir, left, errdefs.ErrFailedPrecondition)
	}
	return os.RemoveAll(dir)
}

func (f *forwarder) startPumps(ctx context.Context, cid, eid, stdin, stdout, stderr string, mem *stdio) (*pumps, error) {
	p := &pumps{done: make(chan struct{})}
	ag := f.agent()
	if mem != nil {
		return p.start(ag, cid, eid, mem.stdin, mem.stdout, mem.stderr, false), nil
	}
	var in io.ReadCloser
	var out, errw io.WriteCloser
	closeAll := func() {
		for _, c := range []io.Closer{in, out, errw} {
			if c != nil {
				c.Close()
			}
		}
	}
	var err error
	if stdin != "" {
		if in, err = fifo.OpenFifo(context.WithoutCancel(ctx), stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err != nil {
			return nil, fmt.Errorf("open stdin fifo %s: %w", stdin, err)
		}
	}
	if stdout != "" {
		if out, err = fifo.OpenFifo(context.WithoutCancel(ctx), stdout, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
			closeAll()
			return nil, fmt.Errorf("open stdout fifo %s: %w", stdout, err)
		}
	}
	if stderr != "" {
		if errw, err = fifo.OpenFifo(context.WithoutCancel(ctx), stderr, syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err != nil {
			closeAll()
			return nil, fmt.Errorf("open stderr fifo %s: %w", stderr, err)
		}
	}
	var r io.Reader
	var w1, w2 io.Writer
	if in != nil {
		r = in
	}
	if out != nil {
		w1 = out
	}
	if errw != nil {
		w2 = errw
	}
	p.closers = []io.Closer{}
	for _, c := range []io.Closer{in, out, errw} {
		if c != nil {
			p.closers = append(p.closers, c)
		}
	}
	return p.start(ag, cid, eid, r, w1, w2, true), nil
}

// waitPumps waits (bounded) for a process's output pumps to drain, so the
// output is complete when Wait returns.
func (f *forwarder) waitPumps(cid, eid string, d time.Duration) {
	f.mu.Lock()
	c := f.containers[cid]
	var p *pumps
	if c != nil {
		p = c.procs[eid]
	}
	f.mu.Unlock()
	if p != nil {
		p.wait(d)
	}
}

// Start forwards, publishes /tasks/start (or /tasks/exec-started) and
// watches for the process's exit to publish /tasks/exit.
func (f *forwarder) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.Start(ctx, r)
	if err != nil {
		return nil, err
	}
	ns := f.containerNamespace(ctx, r.ID)
	if r.ExecID == "" {
		f.publish(ns, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: resp.GetPid()})
	} else {
		f.publish(ns, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: resp.GetPid()})
	}
	// Published after the start event: the queue keeps them in order.
	f.watchExit(cl, ns, r.ID, r.ExecID, resp.GetPid())
	return resp, nil
}

// containerNamespace is the namespace container id's events go to: the
// one recorded at Create, else the request's.
func (f *forwarder) containerNamespace(ctx context.Context, id string) string {
	f.mu.Lock()
	c := f.containers[id]
	f.mu.Unlock()
	if c != nil && c.ns != "" {
		return c.ns
	}
	return f.namespace(ctx)
}

// Delete forwards, stops the pumps and, for a container, removes its
// rootfs mount and bundle from the shared directory.
func (f *forwarder) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.Delete(ctx, r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	c := f.containers[r.ID]
	var p *pumps
	if c != nil {
		p = c.procs[r.ExecID]
		delete(c.procs, r.ExecID)
		if r.ExecID == "" {
			delete(f.containers, r.ID)
		}
	}
	f.mu.Unlock()
	if p != nil {
		p.stop()
	}
	if c == nil && r.ExecID == "" && r.ID == filepath.Base(r.ID) && r.ID != ".." {
		// Not known since a Recover: its bundle may still be in place.
		if err := cleanupDir(filepath.Join(f.inst.spec.SharedDir, r.ID)); err != nil {
			log.G(ctx).WithField("sandbox", f.inst.sb.ID).WithField("container", r.ID).WithError(err).Warn("vm: removing container bundle")
		}
	}
	if c != nil && r.ExecID == "" {
		for _, ep := range c.procs {
			ep.stop()
		}
		if err := cleanupDir(c.dir); err != nil {
			log.G(ctx).WithField("sandbox", f.inst.sb.ID).WithField("container", r.ID).WithError(err).Warn("vm: removing container bundle")
		}
	}
	if r.ExecID == "" {
		ns := f.namespace(ctx)
		if c != nil && c.ns != "" {
			ns = c.ns
		}
		f.publish(ns, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
			ContainerID: r.ID, Pid: resp.GetPid(), ExitStatus: resp.GetExitStatus(), ExitedAt: resp.GetExitedAt(),
		})
	}
	return resp, nil
}

// Exec forwards and starts the exec's stdio pumps.
func (f *forwarder) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	if r.Terminal {
		return nil, errgrpc.ToGRPC(fmt.Errorf("exec %s asks for a terminal: TTYs are not supported in VM sandboxes yet: %w", r.ExecID, errdefs.ErrNotImplemented))
	}
	f.mu.Lock()
	c := f.containers[r.ID]
	f.mu.Unlock()
	if c == nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, errdefs.ErrNotFound))
	}
	resp, err := cl.Exec(ctx, r)
	if err != nil {
		return nil, err
	}
	p, err := f.startPumps(ctx, r.ID, r.ExecID, r.Stdin, r.Stdout, r.Stderr, nil)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	f.mu.Lock()
	c.procs[r.ExecID] = p
	f.mu.Unlock()
	f.publish(c.ns, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return resp, nil
}

// Wait forwards, then lets the output pumps drain.
func (f *forwarder) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.Wait(ctx, r)
	if err == nil {
		f.waitPumps(r.ID, r.ExecID, 5*time.Second)
	}
	return resp, err
}

// State forwards and reports the host's bundle path.
func (f *forwarder) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.State(ctx, r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if c := f.containers[r.ID]; c != nil {
		resp.Bundle = c.bundle
	}
	f.mu.Unlock()
	return resp, nil
}

// Pids forwards.
func (f *forwarder) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Pids(ctx, r)
}

// Pause forwards.
func (f *forwarder) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Pause(ctx, r)
}

// Resume forwards.
func (f *forwarder) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Resume(ctx, r)
}

// Checkpoint forwards.
func (f *forwarder) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Checkpoint(ctx, r)
}

// Kill forwards.
func (f *forwarder) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Kill(ctx, r)
}

// ResizePty forwards.
func (f *forwarder) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.ResizePty(ctx, r)
}

// CloseIO closes the process's stdin: the host pump stops and the agent
// closes the stream.
func (f *forwarder) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.CloseIO(ctx, r)
}

// Update forwards.
func (f *forwarder) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Update(ctx, r)
}

// Stats forwards.
func (f *forwarder) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	return cl.Stats(ctx, r)
}

// Connect forwards and reports the VMM as the shim pid.
func (f *forwarder) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	cl, err := f.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.ShimPid = f.inst.Pid()
	return resp, nil
}

// Shutdown is a no-op: the sandbox's lifecycle belongs to the Sandbox API.
func (f *forwarder) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// killAll stops every container: SIGTERM, then SIGKILL for those still
// running after timeout.
func (f *forwarder) killAll(ctx context.Context, timeout time.Duration) {
	cl, err := f.client()
	if err != nil {
		return
	}
	f.mu.Lock()
	var ids []string
	for id := range f.containers {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			kctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			// Poll State rather than Wait with a deadline: an abandoned Wait
			// would be answered later on a stream ttrpc no longer knows.
			if _, err := cl.Kill(kctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGTERM), All: true}); err == nil {
				for kctx.Err() == nil {
					st, err := cl.State(kctx, &taskAPI.StateRequest{ID: id})
					if err != nil || st.Status == tasktypes.Status_STOPPED {
						return
					}
					select {
					case <-kctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
			fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer fcancel()
			_, _ = cl.Kill(fctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true})
		}(id)
	}
	wg.Wait()
}

// vmGone stops every pump and removes every container's mounts and
// bundle: the guest is gone.
func (f *forwarder) vmGone() {
	f.stopWaits()
	f.mu.Lock()
	cs := f.containers
	f.containers = map[string]*container{}
	f.mu.Unlock()
	for _, c := range cs {
		for _, p := range c.procs {
			p.stop()
		}
		if err := cleanupDir(c.dir); err != nil {
			log.L.WithField("sandbox", f.inst.sb.ID).WithField("container", c.id).WithError(err).Warn("vm: removing container bundle")
		}
	}
}
