package sandboxer

import (
	"context"
	"fmt"

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
	sb.mu.Unlock()
	var m backend.Metrics
	if inst != nil {
		if m, err = inst.Metrics(ctx); err != nil {
			return nil, errgrpc.ToGRPC(fmt.Errorf("metrics of sandbox %s: %w", sb.rec.ID, err))
		}
	}
	data, err := typeurl.MarshalAnyToProto(toCgroup2(m))
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.ControllerMetricsResponse{Metrics: &types.Metric{
		Timestamp: timestamppb.New(timeNow()),
		ID:        sb.rec.ID,
		Data:      data,
	}}, nil
}

func toCgroup2(m backend.Metrics) *cg2.Metrics {
	return &cg2.Metrics{
		Pids: &cg2.PidsStat{Current: uint64(m.Tasks)},
		CPU: &cg2.CPUStat{
			UsageUsec: m.CPUNanos / 1000,
			UserUsec:  m.CPUNanos / 1000,
		},
		Memory: &cg2.MemoryStat{
			Usage: m.MemoryBytes,
			Anon:  m.MemoryBytes,
		},
	}
}
