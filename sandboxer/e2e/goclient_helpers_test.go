package e2e

import (
	"context"
	"testing"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

// startGoSandbox connects containerd's Go client to e (namespace k8s.io,
// sandboxer kuasar), creates and starts the sandbox id, and returns the
// client, the sandbox and the sandboxer's Status of it: containerd's own sandbox service
// drops the Task API address and version, so they are asked of the
// sandboxer. The client is closed and the sandbox shut down at the end of
// the test.
func startGoSandbox(ctx context.Context, t *testing.T, e *testenv.Env, id string) (*containerd.Client, containerd.Sandbox, *api.ControllerStatusResponse) {
	t.Helper()
	c, err := containerd.New(e.ContainerdSock, containerd.WithDefaultNamespace("k8s.io"), containerd.WithDefaultSandboxer("kuasar"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sb, err := c.NewSandbox(ctx, id, containerd.WithSandboxRuntime("io.containerd.kuasar.v1", nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Shutdown(context.WithoutCancel(ctx)) })
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := sandboxerClient(t, e).Status(ctx, &api.ControllerStatusRequest{SandboxID: id})
	if err != nil {
		t.Fatal(err)
	}
	return c, sb, st
}

// runGoTask creates ctr's task with io at the sandbox's Task API address
// (st), starts it, waits for its exit until ctx ends, and returns the task
// (not yet deleted) and its exit code.
func runGoTask(ctx context.Context, t *testing.T, e *testenv.Env, ctr containerd.Container, io cio.Creator, st *api.ControllerStatusResponse) (containerd.Task, uint32) {
	t.Helper()
	task, err := ctr.NewTask(ctx, io, containerd.WithTaskAPIEndpoint(st.Address, st.Version))
	if err != nil {
		t.Fatalf("new task: %v\n%s", err, tail(e.Sandboxer.Output(), 30))
	}
	exitc, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-exitc:
		return task, ex.ExitCode()
	case <-ctx.Done():
		t.Fatal("task did not exit")
	}
	return nil, 0
}
