package forward_test

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/task/forward"
)

// audited intercepts Kill and passes every other call through: the pattern
// of the sandboxer's per-sandbox socket and of Forwarder.
type audited struct {
	forward.Passthrough
	kills int
}

// Kill counts, then forwards.
func (a *audited) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	a.kills++
	return a.Passthrough.Kill(ctx, r)
}

// ExamplePassthrough embeds a Passthrough whose Target has no service yet:
// every call, intercepted or not, fails with the kind Target returned,
// converted for ttrpc.
func ExamplePassthrough() {
	a := &audited{Passthrough: forward.Passthrough{Target: func(_ context.Context, id string) (taskAPI.TTRPCTaskService, error) {
		return nil, fmt.Errorf("task %s: no container created yet: %w", id, errdefs.ErrNotFound)
	}}}
	var svc taskAPI.TTRPCTaskService = a
	_, err := svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "c1"})
	fmt.Println(a.kills, errdefs.IsNotFound(errgrpc.ToNative(err)))
	_, err = svc.State(context.Background(), &taskAPI.StateRequest{ID: "c1"})
	fmt.Println(errdefs.IsNotFound(errgrpc.ToNative(err)))
	// Output:
	// 1 true
	// true
}
