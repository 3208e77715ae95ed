package wasmtask_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// Serve a sandbox's Task API on a unix socket and run one container whose
// bundle already holds its rootfs (containerd would pass rootfs mounts).
func ExampleNew() {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	engine, _ := wazero.New(ctx)
	defer engine.Close(ctx)
	svc, _ := wasmtask.New(ctx, wasmtask.WithEngine(engine), wasmtask.WithSandbox("pod-1", "default"))
	defer svc.Close(ctx)

	dir, _ := os.MkdirTemp("", "wasmtask-example")
	defer os.RemoveAll(dir)
	srv, _ := ttrpc.NewServer()
	taskAPI.RegisterTTRPCTaskService(srv, svc)
	l, _ := net.Listen("unix", filepath.Join(dir, "task.sock"))
	go srv.Serve(ctx, l)
	defer srv.Close()

	// A bundle: config.json and a rootfs holding the module.
	bundle := filepath.Join(dir, "bundle")
	os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(bundle, "rootfs", "exit.wasm"), fixtures.ExitCode, 0o644)
	spec, _ := json.Marshal(specs.Spec{Process: &specs.Process{Args: []string{"/exit.wasm"}, Cwd: "/"}})
	os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o644)

	conn, _ := net.Dial("unix", filepath.Join(dir, "task.sock"))
	client := taskAPI.NewTTRPCTaskClient(ttrpc.NewClient(conn))
	if _, err := client.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		fmt.Println(err)
		return
	}
	client.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
	w, _ := client.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	fmt.Println("exit status:", w.ExitStatus)
	d, _ := client.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	fmt.Println("deleted, exit status:", d.ExitStatus)
	// Output:
	// exit status: 42
	// deleted, exit status: 42
}
