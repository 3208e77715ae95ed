package forward

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Passthrough implements the whole Task API by handing every call,
// unchanged, to the service Target returns for the request's task. A type
// that must intercept some calls embeds it and defines only those methods:
// the sandboxer's per-sandbox socket (routing at the first Create) and
// Forwarder (the agent backends) both do.
type Passthrough struct {
	// Target returns the service that serves task id, or an error (an
	// errdefs kind: it is converted for ttrpc) when there is none.
	Target func(ctx context.Context, id string) (taskAPI.TTRPCTaskService, error)
}

var _ taskAPI.TTRPCTaskService = Passthrough{}

// request is what every Task API request has: the id of its task.
type request interface{ GetID() string }

// call hands r to method m of the service that serves r's task.
func call[Req request, Resp any](p Passthrough, ctx context.Context, r Req, m func(taskAPI.TTRPCTaskService, context.Context, Req) (Resp, error)) (Resp, error) {
	t, err := p.Target(ctx, r.GetID())
	if err != nil {
		var none Resp
		return none, errgrpc.ToGRPC(err)
	}
	return m(t, ctx, r)
}

// The methods below each forward one Task API call through call.

// Create forwards.
func (p Passthrough) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Create)
}

// State forwards.
func (p Passthrough) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.State)
}

// Start forwards.
func (p Passthrough) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Start)
}

// Delete forwards.
func (p Passthrough) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Delete)
}

// Pids forwards.
func (p Passthrough) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Pids)
}

// Pause forwards.
func (p Passthrough) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Pause)
}

// Resume forwards.
func (p Passthrough) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Resume)
}

// Checkpoint forwards.
func (p Passthrough) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Checkpoint)
}

// Kill forwards.
func (p Passthrough) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Kill)
}

// Exec forwards.
func (p Passthrough) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Exec)
}

// ResizePty forwards.
func (p Passthrough) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.ResizePty)
}

// CloseIO forwards.
func (p Passthrough) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.CloseIO)
}

// Update forwards.
func (p Passthrough) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Update)
}

// Wait forwards.
func (p Passthrough) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Wait)
}

// Stats forwards.
func (p Passthrough) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Stats)
}

// Connect forwards.
func (p Passthrough) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Connect)
}

// Shutdown forwards.
func (p Passthrough) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return call(p, ctx, r, taskAPI.TTRPCTaskService.Shutdown)
}
