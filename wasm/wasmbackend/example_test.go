package wasmbackend_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// A sandboxer builds the backend once, then starts a sandbox per pod and
// serves each sandbox's Tasks() on that sandbox's Task API socket.
func ExampleNew() {
	ctx := context.Background()
	b, err := wasmbackend.New(ctx) // a wazero engine; add WithPublisher, WithModuleResolver in a daemon
	if err != nil {
		panic(err)
	}
	defer b.Close(ctx)

	dir, _ := os.MkdirTemp("", "wasm-sandbox-example")
	defer os.RemoveAll(dir)
	inst, err := b.Start(ctx, backend.Sandbox{ID: "pod-1", Namespace: "k8s.io", StateDir: dir})
	if err != nil {
		panic(err)
	}
	m, _ := inst.Metrics(ctx)
	fmt.Println(b.Name(), "sandbox hosted by this process:", inst.Pid() == uint32(os.Getpid()), "tasks:", m.Tasks)

	inst.Stop(ctx, 5*time.Second)
	e, _ := inst.Wait(ctx)
	fmt.Println("exit status:", e.Status)
	fmt.Println("shutdown:", inst.Shutdown(ctx))
	// Output:
	// wasm sandbox hosted by this process: true tasks: 0
	// exit status: 0
	// shutdown: <nil>
}
