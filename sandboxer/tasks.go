package sandboxer

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
	"github.com/kuasar-go/kuasar/task/forward"
)

// taskForwarder serves a sandbox's Task API socket: it hands every call to
// the backend instance's TaskService (forward.Passthrough), starting the
// backend at the first Create when the pod did not name its kind, and
// records each container's exit in its bundle.
type taskForwarder struct {
	passthrough
	sb *sandbox
}

// passthrough names the embedded forward.Passthrough without exporting it.
type passthrough = forward.Passthrough

var _ taskAPI.TTRPCTaskService = (*taskForwarder)(nil)

func newTaskForwarder(sb *sandbox) *taskForwarder {
	f := &taskForwarder{sb: sb}
	f.passthrough = forward.Passthrough{Target: f.tasks}
	return f
}

// tasks returns the instance's task service, or a NotFound naming id
// before the first container created the instance.
func (f *taskForwarder) tasks(_ context.Context, id string) (taskAPI.TTRPCTaskService, error) {
	f.sb.mu.Lock()
	defer f.sb.mu.Unlock()
	if f.sb.inst == nil {
		return nil, fmt.Errorf("task %q in sandbox %s: no container was created in this sandbox yet: %w", id, f.sb.rec.ID, errdefs.ErrNotFound)
	}
	return f.sb.inst.Tasks(), nil
}

// Create routes the sandbox (when its kind is still open), then forwards.
func (f *taskForwarder) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	sb := f.sb
	sb.mu.Lock()
	if sb.rec.Exited {
		sb.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("create task %s: sandbox %s has exited: %w", r.GetID(), sb.rec.ID, errdefs.ErrFailedPrecondition))
	}
	inst, handler, ns := sb.inst, sb.rec.Handler, sb.rec.Namespace
	sb.mu.Unlock()
	if inst == nil {
		ctx := log.WithLogger(ctx, sb.logger(ctx).WithField("container", r.GetID()))
		kind, hv, why := sb.svc.route(ctx, handler, ns, r.GetBundle())
		log.G(ctx).WithField("isolation", kind).WithField("reason", why).Info("routing sandbox at its first container")
		if err := sb.startBackend(ctx, kind, hv); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		sb.mu.Lock()
		inst = sb.inst
		sb.mu.Unlock()
		if inst == nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("create task %s: sandbox %s was shut down: %w", r.GetID(), sb.rec.ID, errdefs.ErrFailedPrecondition))
		}
	}
	resp, err := inst.Tasks().Create(ctx, r)
	if err == nil && r.GetBundle() != "" {
		ctx, lg, tasks, id, bundle, pid := context.WithoutCancel(ctx), sb.logger(ctx), inst.Tasks(), r.GetID(), r.GetBundle(), resp.GetPid()
		if n, ok := tasks.(taskExitHooks); ok {
			if err := n.OnExit(id, func() { recordExit(ctx, lg, tasks, id, bundle, pid) }); err == nil {
				return resp, nil
			}
		}
		go recordExit(ctx, lg, tasks, id, bundle, pid)
	}
	return resp, err
}

// taskExitHooks is a task service that runs a function at a task's exit,
// before it publishes the exit event (wasmtask.Service for Wasm,
// forward.Forwarder for VMs and Quark): the exit record is then in the
// bundle before containerd hears of the exit, and no goroutine waits per
// task. A backend without hooks has its exits recorded by a goroutine in
// Wait, which may lag behind the event.
type taskExitHooks interface {
	OnExit(id string, f func()) error
}

// recordExit waits for task id's init process to end and records its exit
// in the task's bundle (internal/exitrecord), where
// containerd-shim-kuasar-v1 delete finds it if containerd loses this
// sandboxer before it deleted the task. It gives up when the wait fails (the
// sandbox was shut down, or the task deleted and its bundle removed).
func recordExit(ctx context.Context, lg *log.Entry, tasks taskAPI.TTRPCTaskService, id, bundle string, pid uint32) {
	defer func() {
		if r := recover(); r != nil {
			lg.WithField("container", id).WithField("panic", r).Error("task service panicked in Wait; exit not recorded")
		}
	}()
	w, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: id})
	if err != nil {
		lg.WithField("container", id).WithError(err).Debug("no exit to record")
		return
	}
	at := w.GetExitedAt().AsTime()
	if w.GetExitedAt() == nil {
		at = timeNow()
	}
	if err := exitrecord.Write(bundle, exitrecord.Record{Status: w.GetExitStatus(), ExitedAt: at, Pid: pid}); err != nil {
		lg.WithField("container", id).WithError(err).Debug("exit not recorded in the bundle")
	}
}

// Connect reports the sandbox's pid; it works before any container exists.
func (f *taskForwarder) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	f.sb.mu.Lock()
	inst := f.sb.inst
	pid := f.sb.pidLocked()
	f.sb.mu.Unlock()
	if inst == nil {
		return &taskAPI.ConnectResponse{ShimPid: pid}, nil
	}
	return inst.Tasks().Connect(ctx, r)
}

// Shutdown is a no-op: containerd sends it after every task delete, but the
// sandbox (and its other tasks) live until the Sandbox API's Shutdown.
func (f *taskForwarder) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
