package wazero_test

import (
	"context"
	"fmt"
	"os"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// Compile a module once, then run it with its own argv, environment and
// stdout; the exit code is the guest's.
func Example() {
	ctx := context.Background()
	engine, err := wazero.New(ctx)
	if err != nil {
		panic(err)
	}
	defer engine.Close(ctx)

	mod, err := engine.Compile(ctx, fixtures.Hello)
	if err != nil {
		panic(err)
	}
	code, err := mod.Run(ctx, wasm.RunConfig{
		Args:   []string{"hello.wasm", "world"},
		Env:    []string{"GREETING=hi"},
		Stdout: os.Stdout,
	})
	fmt.Println("exit code", code, err)
	// Output:
	// hello from wasm
	// argv[0]=hello.wasm
	// argv[1]=world
	// env GREETING=hi
	// exit code 0 <nil>
}

// A module whose minimum memory is above the run's limit does not start.
func Example_memoryLimit() {
	ctx := context.Background()
	engine, _ := wazero.New(ctx)
	defer engine.Close(ctx)
	mod, _ := engine.Compile(ctx, fixtures.BigMem)
	_, err := mod.Run(ctx, wasm.RunConfig{MemoryLimit: 16 << 20})
	fmt.Println(mod.MinMemoryBytes(), err != nil)
	// Output: 65536000 true
}
