package quark

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TaskServiceV2 is the ttrpc service name of the containerd Task API v2,
// which Quark serves on its task socket. containerd 2.x talks v3
// ("containerd.task.v3.Task") to a sandboxer; the two versions have the
// same methods and the same messages (field for field, wire for wire):
// only the service name differs.
const TaskServiceV2 = "containerd.task.v2.Task"

// v2Client is the bridge: a Task API v3 service (the v3 Go types the
// sandboxer and task/forward use) whose every call goes out over ttrpc to
// the v2 service name, so a v2 server answers it. Since the messages are
// identical, nothing is converted.
type v2Client struct{ c *ttrpc.Client }

var _ taskAPI.TTRPCTaskService = v2Client{}

// NewV2Bridge returns a Task API v3 service that calls the Task API v2
// server at the other end of c (Quark's task socket).
func NewV2Bridge(c *ttrpc.Client) taskAPI.TTRPCTaskService { return v2Client{c: c} }

// call makes one v2 call with request req and returns its response.
func call[Resp any](c v2Client, ctx context.Context, method string, req any) (*Resp, error) {
	var resp Resp
	if err := c.c.Call(ctx, TaskServiceV2, method, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// The methods below each make one call of the same name to the v2 server.

// State calls v2 State.
func (c v2Client) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return call[taskAPI.StateResponse](c, ctx, "State", r)
}

// Create calls v2 Create.
func (c v2Client) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return call[taskAPI.CreateTaskResponse](c, ctx, "Create", r)
}

// Start calls v2 Start.
func (c v2Client) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return call[taskAPI.StartResponse](c, ctx, "Start", r)
}

// Delete calls v2 Delete.
func (c v2Client) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return call[taskAPI.DeleteResponse](c, ctx, "Delete", r)
}

// Pids calls v2 Pids.
func (c v2Client) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return call[taskAPI.PidsResponse](c, ctx, "Pids", r)
}

// Pause calls v2 Pause.
func (c v2Client) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Pause", r)
}

// Resume calls v2 Resume.
func (c v2Client) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Resume", r)
}

// Checkpoint calls v2 Checkpoint.
func (c v2Client) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Checkpoint", r)
}

// Kill calls v2 Kill.
func (c v2Client) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Kill", r)
}

// Exec calls v2 Exec.
func (c v2Client) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Exec", r)
}

// ResizePty calls v2 ResizePty.
func (c v2Client) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "ResizePty", r)
}

// CloseIO calls v2 CloseIO.
func (c v2Client) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "CloseIO", r)
}

// Update calls v2 Update.
func (c v2Client) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Update", r)
}

// Wait calls v2 Wait.
func (c v2Client) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return call[taskAPI.WaitResponse](c, ctx, "Wait", r)
}

// Stats calls v2 Stats.
func (c v2Client) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return call[taskAPI.StatsResponse](c, ctx, "Stats", r)
}

// Connect calls v2 Connect.
func (c v2Client) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return call[taskAPI.ConnectResponse](c, ctx, "Connect", r)
}

// Shutdown calls v2 Shutdown.
func (c v2Client) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return call[emptypb.Empty](c, ctx, "Shutdown", r)
}
