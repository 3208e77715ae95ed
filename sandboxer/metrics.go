package sandboxer

import (
	"context"
	"fmt"
	"math"

	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// Metrics reports the backend's figures as a cgroup v2 Metrics message
// (io.containerd.cgroups.v2.Metrics), the shape containerd's CRI decodes for
// pod stats: memory usage, CPU usage in microseconds and the task count as
// the pids figure.
func (s *Service) Metrics(ctx context.Context, req *api.ControllerMetricsRequest) (*api.ControllerMetricsResponse, error) {
	sb, err := s.get(ctx, req.GetSandboxID())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sb.mu.Lock()
	inst := sb.inst
	limit := sb.rec.Resources.MemoryLimitBytes
	sb.mu.Unlock()
	var m backend.Metrics
	if inst != nil {
		if m, err = inst.Metrics(ctx); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("metrics of sandbox %s: %w", sb.rec.ID, err))
		}
	}
	data, err := typeurl.MarshalAnyToProto(toCgroup2(m, limit))
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.ControllerMetricsResponse{Metrics: &types.Metric{
		Timestamp: timestamppb.New(timeNow()),
		ID:        sb.rec.ID,
		Data:      data,
	}}, nil
}

// toCgroup2 encodes m; limit is the pod's memory limit (0: none, reported as
// cgroup v2's "max" so that CRI reports no available-bytes figure). Each
// field carries what its cgroup v2 name says, or zero when the backend does
// not know it: total CPU is usage_usec only, never also user_usec, and the
// memory split is the backend's, not the total put in anon.
func toCgroup2(m backend.Metrics, limit uint64) *cg2.Metrics {
	if limit == 0 {
		limit = math.MaxUint64
	}
	return &cg2.Metrics{
		Pids: &cg2.PidsStat{Current: uint64(m.Tasks)},
		CPU: &cg2.CPUStat{
			UsageUsec:  m.CPUNanos / 1000,
			UserUsec:   m.UserNanos / 1000,
			SystemUsec: m.SystemNanos / 1000,
		},
		Memory: &cg2.MemoryStat{
			Usage:      m.MemoryBytes,
			UsageLimit: limit,
			Anon:       m.AnonBytes,
			File:       m.FileBytes,
			Shmem:      m.ShmemBytes,
		},
	}
}
