//go:build wasmedge

package wasmedge_test

import (
	"context"
	"io"
	"testing"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// BenchmarkHelloRun measures one instantiate+run of the C hello module
// (compiled, and for WasmEdge AOT-compiled, before the timer starts) on
// each engine side by side: wazero in-process, WasmEdge in its child
// process (AOT and interpreter).
func BenchmarkHelloRun(b *testing.B) {
	ctx := context.Background()
	engines := []struct {
		name string
		new  func() (wasm.Engine, error)
	}{
		{"wazero", func() (wasm.Engine, error) { return wazero.New(ctx) }},
		{"wasmedge-aot", func() (wasm.Engine, error) { return wasmedge.New(ctx, wasmedge.WithCacheDir(cacheDir)) }},
		{"wasmedge-interpreter", func() (wasm.Engine, error) {
			return wasmedge.New(ctx, wasmedge.WithCacheDir(cacheDir), wasmedge.WithInterpreter())
		}},
	}
	for _, eng := range engines {
		b.Run(eng.name, func(b *testing.B) {
			e, err := eng.new()
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close(ctx)
			m, err := e.Compile(ctx, fixtures.Hello)
			if err != nil {
				b.Fatal(err)
			}
			cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard, Stderr: io.Discard}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if code, err := m.Run(ctx, cfg); err != nil || code != 0 {
					b.Fatalf("run = %d, %v", code, err)
				}
			}
		})
	}
}
