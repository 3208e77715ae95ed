package sandboxer_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/kuasar-go/kuasar/sandboxer"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// ExampleNew creates a sandboxer with the in-process Wasm backend, then
// creates and starts a sandbox the way containerd does and reads the Task
// API address containerd would dial. In a daemon, Register the Service on a
// gRPC server instead of calling it directly.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "kex")
	defer os.RemoveAll(dir)

	wasm, err := wasmbackend.New(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer wasm.Close(ctx)
	svc, err := sandboxer.New(ctx, sandboxer.WithStateDir(dir), sandboxer.WithBackend(wasm))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer svc.Close()

	if _, err := svc.Create(ctx, &api.ControllerCreateRequest{SandboxID: "demo"}); err != nil {
		fmt.Println(err)
		return
	}
	st, err := svc.Start(ctx, &api.ControllerStartRequest{SandboxID: "demo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("task API version", st.Version, "over", strings.SplitN(st.Address, "://", 2)[0])
	status, _ := svc.Status(ctx, &api.ControllerStatusRequest{SandboxID: "demo"})
	fmt.Println(status.State)
	svc.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: "demo"})
	_, err = svc.Status(ctx, &api.ControllerStatusRequest{SandboxID: "demo"})
	// The Service returns gRPC status errors, as containerd receives them;
	// errgrpc.ToNative gives back the errdefs kind.
	fmt.Println(errdefs.IsNotFound(errgrpc.ToNative(err)))
	// Output:
	// task API version 3 over ttrpc+unix
	// SANDBOX_READY
	// true
}
