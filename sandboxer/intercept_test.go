package sandboxer

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/metadata"
)

// TestInterceptNamespace: a Task API call's namespace is the caller's ttrpc
// header, else the sandbox's; the gRPC metadata of the Sandbox API call
// that started the task server (in the server's context) is not the call's
// and is not visible to it.
func TestInterceptNamespace(t *testing.T) {
	// The server's context, as serveTasksLocked gets it from Start.
	base := metadata.NewIncomingContext(context.Background(),
		metadata.Pairs(namespaces.GRPCHeader, "start-call", "x-start-only", "1"))
	tests := []struct {
		name   string
		caller string // ttrpc namespace header; "" for none
		want   string
	}{
		{"caller's ttrpc header", "caller", "caller"},
		{"no header: the sandbox's", "", "sandbox"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := base
			if tc.caller != "" {
				ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{namespaces.TTRPCHeader: {tc.caller}})
			}
			sb := &sandbox{rec: record{ID: "sb", Namespace: "sandbox"}}
			var got string
			var md metadata.MD
			_, err := sb.intercept(ctx, nil, &ttrpc.UnaryServerInfo{FullMethod: "/containerd.task.v3.Task/State"},
				func(ctx context.Context, _ func(interface{}) error) (interface{}, error) {
					got, _ = namespaces.Namespace(ctx)
					md, _ = metadata.FromIncomingContext(ctx)
					return nil, nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("namespace %q, want %q", got, tc.want)
			}
			if len(md) != 0 {
				t.Errorf("the call sees the starting call's gRPC metadata: %v", md)
			}
		})
	}
}
