package wasm_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// run is what a caller of the contract writes: it compiles with whatever
// Engine it was given (wazero by default, WasmEdge behind a build tag) and
// runs the module with a RunConfig, never naming the engine.
func run(ctx context.Context, e wasm.Engine, module []byte, cfg wasm.RunConfig) (int, error) {
	mod, err := e.Compile(ctx, module)
	if err != nil {
		return 0, err
	}
	return mod.Run(ctx, cfg)
}

// Example runs a module through the engine contract; the task service and
// the CLI do the same with the engine they were configured with.
func Example() {
	ctx := context.Background()
	engine, err := wazero.New(ctx)
	if err != nil {
		panic(err)
	}
	defer engine.Close(ctx)
	var out strings.Builder
	code, err := run(ctx, engine, fixtures.Hello, wasm.RunConfig{Args: []string{"hello.wasm"}, Stdout: &out})
	fmt.Println(engine.Name(), code, err)
	fmt.Print(out.String())
	// Output:
	// wazero 0 <nil>
	// hello from wasm
	// argv[0]=hello.wasm
}

// A MemoryBudget is a pod's memory limit shared by its containers: every
// instance run with it is charged for its linear memory, and a grow that
// would pass the limit is refused even when the instance's own limit allows
// it.
func ExampleMemoryBudget() {
	pod := wasm.NewMemoryBudget(64 << 20)
	fmt.Println(pod.Reserve(48<<20), pod.Reserve(32<<20), pod.Used()>>20)
	pod.Release(48 << 20)
	fmt.Println(pod.Reserve(32<<20), pod.Used()>>20)
	// Output:
	// true false 48
	// true 32
}
