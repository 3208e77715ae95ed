// Package forward is the host side of the Task API for sandboxes whose
// containers run under a guest agent (task/agent: the VM backend) or a Task
// API server of their own (Quark: the quark backend). A Forwarder serves containerd's Task API v3 for one
// sandbox by forwarding each call to the agent's TTRPCTaskService, and
// intercepts only what the host must do itself:
//
//   - Create: read the bundle's config.json (internal/bundle), let the
//     backend make the bundle and rootfs visible to the guest (Host.Prepare)
//     and forward the guest's bundle path; open the host ends of stdio
//     (task/stdio) and pump them to and from the agent's stream RPCs.
//   - Exec: the same stdio pumps for the exec.
//   - Start, Delete: publish the task events containerd expects from a shim
//     (/tasks/create, start, exec-added, exec-started, exit, delete, in
//     order), watching each process's exit in the background.
//   - Wait: let the output pumps drain, so output is complete when the
//     exit is reported.
//   - Delete: stop the pumps and undo Host.Prepare (Host.Release).
//   - State: report the host's bundle path; Connect: the backend's pid
//     (Host.ShimPid); Shutdown: nothing (the Sandbox API owns the sandbox).
//
// A Host whose Task API server opens each process's stdio itself (Quark
// serves the Task API and opens the FIFOs named in the request) implements
// DirectIO: the forwarder then opens no host ends and runs no pumps, and
// forwards the stdio paths DirectIO.PrepareIO returns instead.
//
// Every other call goes to the agent unchanged (Passthrough).
package forward

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kuasar-go/kuasar/internal/bundle"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/exithook"
	"github.com/kuasar-go/kuasar/task/stdio"
)

// Host is what a backend provides to its Forwarder: the agent connection
// and the backend-specific half of Create and Delete.
type Host interface {
	// Agent returns the guest agent's Task API and its stdio stream
	// service, or an error wrapping errdefs.ErrFailedPrecondition when the
	// guest is not running.
	Agent() (taskAPI.TTRPCTaskService, agentapi.AgentService, error)
	// Prepare makes container r.ID's bundle and rootfs visible to the guest
	// and returns the path of the bundle in the guest. spec is the host
	// bundle's config.json, which Prepare adapts to the guest's view (for
	// instance root.path) and writes where the guest reads it. r.ID is a
	// single path element. On error the forwarder calls Release.
	Prepare(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (guestBundle string, err error)
	// Release undoes Prepare for container id. It is called after a failed
	// Create, after Delete, for every container when the guest is gone
	// (Forwarder.Gone), and for a deleted container this forwarder did not
	// create (after a sandboxer restart): it must accept an id it has
	// nothing for. id is a single path element.
	Release(ctx context.Context, id string) error
	// ShimPid is the pid Connect reports as the shim's: the process that
	// runs the guest (the VMM).
	ShimPid() uint32
}

// DirectIO is implemented by a Host whose Task API server opens the
// processes' stdio itself rather than through the agent's stream RPCs
// (Host.Agent may then return a nil AgentService). The forwarder calls
// PrepareIO at Create and Exec and forwards the paths it returns; the host
// undoes it for a container in Host.Release and for an exec in ReleaseIO.
type DirectIO interface {
	// PrepareIO makes the host's stdio paths of process (cid, execID) (""
	// for the container's own) reachable by the server and returns the
	// paths the server opens; an empty path stays empty. cid and execID
	// are single path elements.
	PrepareIO(ctx context.Context, cid, execID string, io IO) (IO, error)
	// ReleaseIO undoes PrepareIO for an exec after its Delete (or a failed
	// Exec). It must accept an exec it has nothing for.
	ReleaseIO(ctx context.Context, cid, execID string) error
}

// IO names a process's standard streams (FIFOs or files), as in the Task
// API's Create and Exec requests.
type IO struct {
	Stdin, Stdout, Stderr string
}

// Publisher takes task events in order without blocking
// (task/events.Queue).
type Publisher interface {
	Publish(ns, topic string, ev events.Event)
}

// Config configures a Forwarder.
type Config struct {
	// Sandbox is the sandbox's id, for logs and errors.
	Sandbox string
	// Namespace is the containerd namespace events go to when a request
	// carries none.
	Namespace string
	// Host is the backend.
	Host Host
	// Events receives the task events; nil drops them (containerd then
	// learns of exits through Wait only).
	Events Publisher
}

// Forwarder serves the Task API of one sandbox by forwarding it to the
// sandbox's guest agent (see the package documentation).
type Forwarder struct {
	passthrough // every call not intercepted below

	cfg Config

	mu         sync.Mutex
	containers map[string]*container
	// waits bounds the background Waits that publish /tasks/exit; Gone
	// cancels it.
	waits     context.Context
	stopWaits context.CancelFunc
}

// passthrough names the embedded Passthrough without exporting it.
type passthrough = Passthrough

// container is what the forwarder knows of a container it created.
type container struct {
	id     string
	bundle string // the host bundle containerd gave
	ns     string // the containerd namespace its events go to
	procs  map[string]*pumps
	// exitHooks run once the init process has exited, before /tasks/exit
	// is published (OnExit).
	exitHooks exithook.Hooks
}

var _ taskAPI.TTRPCTaskService = (*Forwarder)(nil)

// New returns the Forwarder of one sandbox.
func New(cfg Config) *Forwarder {
	f := &Forwarder{cfg: cfg, containers: map[string]*container{}}
	f.passthrough = Passthrough{Target: func(context.Context, string) (taskAPI.TTRPCTaskService, error) {
		t, _, err := f.cfg.Host.Agent()
		return t, err
	}}
	f.waits, f.stopWaits = context.WithCancel(context.Background())
	return f
}

// Count is the number of live processes (containers and execs).
func (f *Forwarder) Count() uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.containers {
		n += len(c.procs)
	}
	return uint32(n)
}

// Knows reports whether the forwarder created container id (and has not
// deleted it): a container the guest runs that it does not know was left
// by a process that died (see vm/vmbackend's re-attach).
func (f *Forwarder) Knows(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.containers[id]
	return ok
}

// Create prepares the container's bundle for the guest, forwards, and
// pumps the stdio named in the request.
func (f *Forwarder) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return f.create(ctx, r)
}

func (f *Forwarder) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	tasks, ag, err := f.cfg.Host.Agent()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if !plainName(r.ID) {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container id %q must be a single path element: %w", r.ID, errdefs.ErrInvalidArgument))
	}
	if r.Terminal {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s asks for a terminal: TTYs are not supported in sandboxes with a guest agent yet, run it without -t: %w", r.ID, errdefs.ErrNotImplemented))
	}
	c := &container{id: r.ID, bundle: r.Bundle, procs: map[string]*pumps{}, ns: f.namespace(ctx)}
	f.mu.Lock()
	if _, ok := f.containers[r.ID]; ok {
		f.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists))
	}
	f.containers[r.ID] = c
	f.mu.Unlock()
	mustRelease := false
	defer func() {
		if retErr == nil {
			return
		}
		f.mu.Lock()
		delete(f.containers, r.ID)
		f.mu.Unlock()
		if mustRelease {
			f.release(ctx, r.ID)
		}
	}()

	spec, err := bundle.ReadSpec(r.Bundle)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, err))
	}
	mustRelease = true // Prepare may have made something before failing
	guestBundle, err := f.cfg.Host.Prepare(ctx, r, spec)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	fwd := proto.Clone(r).(*taskAPI.CreateTaskRequest)
	fwd.Bundle = guestBundle
	fwd.Rootfs = nil
	if d, ok := f.cfg.Host.(DirectIO); ok {
		io, err := d.PrepareIO(ctx, r.ID, "", IO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr})
		if err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, err))
		}
		fwd.Stdin, fwd.Stdout, fwd.Stderr = io.Stdin, io.Stdout, io.Stderr
		resp, err := tasks.Create(ctx, fwd)
		if err != nil {
			return nil, err
		}
		f.created(c, r, resp, noPumps())
		return resp, nil
	}
	s, pipes, err := f.openStdio(ctx, r.Stdin, r.Stdout, r.Stderr)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, err))
	}
	resp, err := tasks.Create(ctx, fwd)
	if err != nil {
		_ = pipes.Close()
		return nil, err
	}
	f.created(c, r, resp, startPumps(ag, r.ID, "", s, pipes))
	return resp, nil
}

// created records container c's process and publishes /tasks/create.
func (f *Forwarder) created(c *container, r *taskAPI.CreateTaskRequest, resp *taskAPI.CreateTaskResponse, p *pumps) {
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
}

// openStdio opens the host ends of a process's stdio (task/stdio).
func (f *Forwarder) openStdio(ctx context.Context, stdin, stdout, stderr string) (streams, *stdio.Pipes, error) {
	pipes, err := stdio.Open(ctx, stdio.Config{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return streams{}, nil, err
	}
	s := streams{Stdin: pipes.Stdin, Stdout: pipes.Stdout, Stderr: pipes.Stderr}
	if stdout != "" && stderr == stdout {
		// One host writer for both: the agent still has two streams.
		s.Stderr = pipes.Stdout
	}
	return s, pipes, nil
}

// plainName reports whether id is a single path element.
func plainName(id string) bool {
	return id != "" && id == filepath.Base(id) && id != "." && id != ".."
}

// release calls Host.Release and logs what it could not remove.
func (f *Forwarder) release(ctx context.Context, id string) {
	if err := f.cfg.Host.Release(ctx, id); err != nil {
		log.G(ctx).WithField("sandbox", f.cfg.Sandbox).WithField("container", id).WithError(err).Warn("forward: releasing the container's bundle")
	}
}

// Start forwards, publishes /tasks/start (or /tasks/exec-started) and
// watches for the process's exit to publish /tasks/exit.
func (f *Forwarder) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	tasks, _, err := f.cfg.Host.Agent()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err := tasks.Start(ctx, r)
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
	f.watchExit(tasks, ns, r.ID, r.ExecID, resp.GetPid())
	return resp, nil
}

// Delete forwards, stops the pumps and, for a container, releases its
// bundle (Host.Release) and publishes /tasks/delete.
func (f *Forwarder) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	tasks, _, err := f.cfg.Host.Agent()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp, err := tasks.Delete(ctx, r)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	c := f.containers[r.ID]
	var stop []*pumps
	if c != nil {
		if p := c.procs[r.ExecID]; p != nil {
			stop = append(stop, p)
		}
		delete(c.procs, r.ExecID)
		if r.ExecID == "" {
			delete(f.containers, r.ID)
			for _, p := range c.procs {
				stop = append(stop, p)
			}
		}
	}
	f.mu.Unlock()
	for _, p := range stop {
		p.stop()
	}
	if r.ExecID != "" {
		if d, ok := f.cfg.Host.(DirectIO); ok && plainName(r.ID) && plainName(r.ExecID) {
			f.releaseIO(ctx, d, r.ID, r.ExecID)
		}
		return resp, nil
	}
	// A container this forwarder did not create (a sandboxer restart) may
	// still have its bundle in place: release it too.
	if c != nil || plainName(r.ID) {
		f.release(ctx, r.ID)
	}
	ns := f.namespace(ctx)
	if c != nil && c.ns != "" {
		ns = c.ns
	}
	f.publish(ns, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, Pid: resp.GetPid(), ExitStatus: resp.GetExitStatus(), ExitedAt: resp.GetExitedAt(),
	})
	return resp, nil
}

// Exec forwards and pumps the exec's stdio.
func (f *Forwarder) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	tasks, ag, err := f.cfg.Host.Agent()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Terminal {
		return nil, errgrpc.ToGRPC(fmt.Errorf("exec %s asks for a terminal: TTYs are not supported in sandboxes with a guest agent yet: %w", r.ExecID, errdefs.ErrNotImplemented))
	}
	f.mu.Lock()
	c := f.containers[r.ID]
	f.mu.Unlock()
	if c == nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.ID, errdefs.ErrNotFound))
	}
	if d, ok := f.cfg.Host.(DirectIO); ok {
		if !plainName(r.ExecID) {
			return nil, errgrpc.ToGRPC(fmt.Errorf("exec id %q must be a single path element: %w", r.ExecID, errdefs.ErrInvalidArgument))
		}
		io, err := d.PrepareIO(ctx, r.ID, r.ExecID, IO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr})
		if err != nil {
			f.releaseIO(ctx, d, r.ID, r.ExecID)
			return nil, errgrpc.ToGRPC(fmt.Errorf("exec %s in container %s: %w", r.ExecID, r.ID, err))
		}
		fwd := proto.Clone(r).(*taskAPI.ExecProcessRequest)
		fwd.Stdin, fwd.Stdout, fwd.Stderr = io.Stdin, io.Stdout, io.Stderr
		resp, err := tasks.Exec(ctx, fwd)
		if err != nil {
			f.releaseIO(ctx, d, r.ID, r.ExecID)
			return nil, err
		}
		f.execAdded(c, r, noPumps())
		return resp, nil
	}
	s, pipes, err := f.openStdio(ctx, r.Stdin, r.Stdout, r.Stderr)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("exec %s in container %s: %w", r.ExecID, r.ID, err))
	}
	resp, err := tasks.Exec(ctx, r)
	if err != nil {
		_ = pipes.Close()
		return nil, err
	}
	f.execAdded(c, r, startPumps(ag, r.ID, r.ExecID, s, pipes))
	return resp, nil
}

// execAdded records exec r's process and publishes /tasks/exec-added.
func (f *Forwarder) execAdded(c *container, r *taskAPI.ExecProcessRequest, p *pumps) {
	f.mu.Lock()
	c.procs[r.ExecID] = p
	f.mu.Unlock()
	f.publish(c.ns, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
}

// releaseIO calls DirectIO.ReleaseIO and logs what it could not undo.
func (f *Forwarder) releaseIO(ctx context.Context, d DirectIO, cid, eid string) {
	if err := d.ReleaseIO(ctx, cid, eid); err != nil {
		log.G(ctx).WithField("sandbox", f.cfg.Sandbox).WithField("container", cid).WithField("exec", eid).WithError(err).Warn("forward: releasing the exec's stdio")
	}
}

// Wait forwards, then lets the output pumps drain.
func (f *Forwarder) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	resp, err := f.passthrough.Wait(ctx, r)
	if err == nil {
		f.waitPumps(r.ID, r.ExecID)
	}
	return resp, err
}

// State forwards and reports the host's bundle path.
func (f *Forwarder) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	resp, err := f.passthrough.State(ctx, r)
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

// Connect forwards and reports Host.ShimPid as the shim's pid.
func (f *Forwarder) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	resp, err := f.passthrough.Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.ShimPid = f.cfg.Host.ShimPid()
	return resp, nil
}

// Shutdown is a no-op: the sandbox's lifecycle belongs to the Sandbox API.
func (f *Forwarder) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// waitPumps waits (bounded) for a process's output pumps to drain, so the
// output is complete when Wait returns.
func (f *Forwarder) waitPumps(cid, eid string) {
	f.mu.Lock()
	var p *pumps
	if c := f.containers[cid]; c != nil {
		p = c.procs[eid]
	}
	f.mu.Unlock()
	if p != nil {
		p.wait(pumpTimeout)
	}
}

// namespace is the request's containerd namespace, or the sandbox's when
// the request carries none.
func (f *Forwarder) namespace(ctx context.Context) string {
	if ns, ok := namespaces.Namespace(ctx); ok && ns != "" {
		return ns
	}
	return f.cfg.Namespace
}

// containerNamespace is the namespace container id's events go to: the
// one recorded at Create, else the request's.
func (f *Forwarder) containerNamespace(ctx context.Context, id string) string {
	f.mu.Lock()
	c := f.containers[id]
	f.mu.Unlock()
	if c != nil && c.ns != "" {
		return c.ns
	}
	return f.namespace(ctx)
}

// OnExit runs f once container id's init process has exited in the guest,
// before its /tasks/exit is published, on the goroutine that publishes it
// (f must not block for long; a Wait of the process returns at once inside
// it). What f records (the sandboxer's exit record in the bundle) is then on
// disk before containerd hears of the exit, and no goroutine waits in the
// agent per container for it. When the exit was already published, f runs
// at once. A container deleted before its init process started runs no
// hook: there is no exit to keep.
func (f *Forwarder) OnExit(id string, fn func()) error {
	f.mu.Lock()
	c := f.containers[id]
	f.mu.Unlock()
	if c == nil {
		return fmt.Errorf("container %q in sandbox %s: %w", id, f.cfg.Sandbox, errdefs.ErrNotFound)
	}
	c.exitHooks.Add(fn)
	return nil
}

// runExitHooks runs container id's exit hooks, each once.
func (f *Forwarder) runExitHooks(id string) {
	f.mu.Lock()
	c := f.containers[id]
	f.mu.Unlock()
	if c != nil {
		c.exitHooks.Run()
	}
}

// publish queues one task event; it never blocks.
func (f *Forwarder) publish(ns, topic string, ev events.Event) {
	if f.cfg.Events != nil {
		f.cfg.Events.Publish(ns, topic, ev)
	}
}

// watchExit waits in the background for process (cid, eid) to end in the
// guest and publishes /tasks/exit with the status and time the agent
// reports, once the output pumps have drained. It gives up silently when
// the guest goes away (Gone cancels the waits).
func (f *Forwarder) watchExit(tasks taskAPI.TTRPCTaskService, ns, cid, eid string, pid uint32) {
	f.mu.Lock()
	ctx := f.waits
	f.mu.Unlock()
	go func() {
		resp, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: cid, ExecID: eid})
		if err != nil {
			if ctx.Err() == nil {
				log.L.WithField("sandbox", f.cfg.Sandbox).WithField("container", cid).WithField("exec", eid).WithError(err).
					Debug("forward: waiting for the exit to publish /tasks/exit")
			}
			return
		}
		f.waitPumps(cid, eid)
		id := eid
		if id == "" {
			id = cid
		}
		at := resp.GetExitedAt()
		if at == nil {
			at = timestamppb.Now()
		}
		if eid == "" {
			f.runExitHooks(cid)
		}
		f.publish(ns, runtime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: cid, ID: id, Pid: pid, ExitStatus: resp.GetExitStatus(), ExitedAt: at,
		})
	}()
}

// KillAll stops every container: SIGTERM, then SIGKILL for those still
// running after timeout.
func (f *Forwarder) KillAll(ctx context.Context, timeout time.Duration) {
	tasks, _, err := f.cfg.Host.Agent()
	if err != nil {
		return
	}
	f.mu.Lock()
	var ids []string
	for id := range f.containers {
		ids = append(ids, id)
	}
	f.mu.Unlock()
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
			if _, err := tasks.Kill(kctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGTERM), All: true}); err == nil {
				for kctx.Err() == nil {
					st, err := tasks.State(kctx, &taskAPI.StateRequest{ID: id})
					if err != nil || st.Status == tasktypes.Status_STOPPED {
						return
					}
					t := time.NewTimer(50 * time.Millisecond)
					select {
					case <-kctx.Done():
					case <-t.C:
					}
					t.Stop()
				}
			}
			fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer fcancel()
			_, _ = tasks.Kill(fctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true})
		}(id)
	}
	wg.Wait()
}

// Gone stops every pump and releases every container's bundle: the guest
// is gone. The forwarder stays usable; its calls fail while Host.Agent
// does.
func (f *Forwarder) Gone() {
	f.stopWaits()
	f.mu.Lock()
	cs := f.containers
	f.containers = map[string]*container{}
	f.mu.Unlock()
	for _, c := range cs {
		for _, p := range c.procs {
			p.stop()
		}
		f.release(context.Background(), c.id)
	}
}
