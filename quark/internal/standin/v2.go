package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// v2Server serves the Task API v2 by handing each call to containerd's
// runc task service (a v3 service: the messages are the same, so each is
// re-decoded as its v3 twin), after resolving the request's bundle and
// stdio paths below the sandbox root, as Quark does.
type v2Server struct {
	root string
	svc  taskAPI.TTRPCTaskService
}

var _ taskv2.TTRPCTaskService = (*v2Server)(nil)

// relay re-decodes in as Q (v3), calls fn, and re-decodes its answer as R
// (v2). edit, when set, rewrites the v3 request first.
func relay[Q, R any, PQ interface {
	*Q
	proto.Message
}, PR interface {
	*R
	proto.Message
}, A proto.Message](ctx context.Context, in proto.Message, fn func(context.Context, PQ) (A, error), edit func(PQ) error) (PR, error) {
	b, err := proto.Marshal(in)
	if err != nil {
		return nil, err
	}
	q := PQ(new(Q))
	if err := proto.Unmarshal(b, q); err != nil {
		return nil, err
	}
	if edit != nil {
		if err := edit(q); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	}
	a, err := fn(ctx, q)
	if err != nil {
		return nil, err
	}
	if b, err = proto.Marshal(a); err != nil {
		return nil, err
	}
	r := PR(new(R))
	return r, proto.Unmarshal(b, r)
}

// inRoot resolves p, a path as the sandbox sees it (/<cid>/...), below
// the sandbox root; "" stays "".
func (s *v2Server) inRoot(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q is not absolute in the sandbox's root: %w", p, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(s.root, filepath.Clean(p)), nil
}

func (s *v2Server) stdio(in, out, errp *string) error {
	for _, p := range []*string{in, out, errp} {
		v, err := s.inRoot(*p)
		if err != nil {
			return err
		}
		*p = v
	}
	return nil
}

// Create resolves the bundle and stdio below the root.
func (s *v2Server) Create(ctx context.Context, r *taskv2.CreateTaskRequest) (*taskv2.CreateTaskResponse, error) {
	return relay[taskAPI.CreateTaskRequest, taskv2.CreateTaskResponse](ctx, r, s.svc.Create, func(q *taskAPI.CreateTaskRequest) error {
		b, err := s.inRoot(q.Bundle)
		if err != nil {
			return err
		}
		q.Bundle = b
		return s.stdio(&q.Stdin, &q.Stdout, &q.Stderr)
	})
}

// Exec resolves the stdio below the root.
func (s *v2Server) Exec(ctx context.Context, r *taskv2.ExecProcessRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ExecProcessRequest, emptypb.Empty](ctx, r, s.svc.Exec, func(q *taskAPI.ExecProcessRequest) error {
		return s.stdio(&q.Stdin, &q.Stdout, &q.Stderr)
	})
}

// The other methods relay unchanged.

func (s *v2Server) State(ctx context.Context, r *taskv2.StateRequest) (*taskv2.StateResponse, error) {
	return relay[taskAPI.StateRequest, taskv2.StateResponse](ctx, r, s.svc.State, nil)
}

func (s *v2Server) Start(ctx context.Context, r *taskv2.StartRequest) (*taskv2.StartResponse, error) {
	return relay[taskAPI.StartRequest, taskv2.StartResponse](ctx, r, s.svc.Start, nil)
}

func (s *v2Server) Delete(ctx context.Context, r *taskv2.DeleteRequest) (*taskv2.DeleteResponse, error) {
	return relay[taskAPI.DeleteRequest, taskv2.DeleteResponse](ctx, r, s.svc.Delete, nil)
}

func (s *v2Server) Pids(ctx context.Context, r *taskv2.PidsRequest) (*taskv2.PidsResponse, error) {
	return relay[taskAPI.PidsRequest, taskv2.PidsResponse](ctx, r, s.svc.Pids, nil)
}

func (s *v2Server) Pause(ctx context.Context, r *taskv2.PauseRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.PauseRequest, emptypb.Empty](ctx, r, s.svc.Pause, nil)
}

func (s *v2Server) Resume(ctx context.Context, r *taskv2.ResumeRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ResumeRequest, emptypb.Empty](ctx, r, s.svc.Resume, nil)
}

func (s *v2Server) Checkpoint(ctx context.Context, r *taskv2.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.CheckpointTaskRequest, emptypb.Empty](ctx, r, s.svc.Checkpoint, nil)
}

func (s *v2Server) Kill(ctx context.Context, r *taskv2.KillRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.KillRequest, emptypb.Empty](ctx, r, s.svc.Kill, nil)
}

func (s *v2Server) ResizePty(ctx context.Context, r *taskv2.ResizePtyRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ResizePtyRequest, emptypb.Empty](ctx, r, s.svc.ResizePty, nil)
}

func (s *v2Server) CloseIO(ctx context.Context, r *taskv2.CloseIORequest) (*emptypb.Empty, error) {
	return relay[taskAPI.CloseIORequest, emptypb.Empty](ctx, r, s.svc.CloseIO, nil)
}

func (s *v2Server) Update(ctx context.Context, r *taskv2.UpdateTaskRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.UpdateTaskRequest, emptypb.Empty](ctx, r, s.svc.Update, nil)
}

func (s *v2Server) Wait(ctx context.Context, r *taskv2.WaitRequest) (*taskv2.WaitResponse, error) {
	return relay[taskAPI.WaitRequest, taskv2.WaitResponse](ctx, r, s.svc.Wait, nil)
}

func (s *v2Server) Stats(ctx context.Context, r *taskv2.StatsRequest) (*taskv2.StatsResponse, error) {
	return relay[taskAPI.StatsRequest, taskv2.StatsResponse](ctx, r, s.svc.Stats, nil)
}

func (s *v2Server) Connect(ctx context.Context, r *taskv2.ConnectRequest) (*taskv2.ConnectResponse, error) {
	return relay[taskAPI.ConnectRequest, taskv2.ConnectResponse](ctx, r, s.svc.Connect, nil)
}

func (s *v2Server) Shutdown(ctx context.Context, r *taskv2.ShutdownRequest) (*emptypb.Empty, error) {
	return relay[taskAPI.ShutdownRequest, emptypb.Empty](ctx, r, s.svc.Shutdown, nil)
}
