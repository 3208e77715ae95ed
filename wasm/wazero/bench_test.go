package wazero_test

import (
	"context"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// BenchmarkRunHello instantiates and runs the C hello module (~28 KB) with the
// compiled module reused: the per-container cost of a warm Wasm start.
func BenchmarkRunHello(b *testing.B) {
	e := newEngine(b)
	m := compile(b, e, fixtures.Hello)
	cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if code, err := m.Run(ctx, cfg); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkRunHelloWazeroWASI is BenchmarkRunHello with wazero's own WASI
// host instead of kuasar's, for comparison.
func BenchmarkRunHelloWazeroWASI(b *testing.B) {
	e := newEngine(b, wazero.WithWazeroWASI())
	m := compile(b, e, fixtures.Hello)
	cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if code, err := m.Run(ctx, cfg); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkRunHelloParallel is BenchmarkRunHello from GOMAXPROCS goroutines.
func BenchmarkRunHelloParallel(b *testing.B) {
	e := newEngine(b)
	m := compile(b, e, fixtures.Hello)
	cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code, err := m.Run(context.Background(), cfg); code != 0 || err != nil {
				b.Error(code, err)
				return
			}
		}
	})
}

// BenchmarkRunHelloMemoryLimit is BenchmarkRunHello with a memory limit, which
// swaps in the limiting allocator.
func BenchmarkRunHelloMemoryLimit(b *testing.B) {
	e := newEngine(b)
	m := compile(b, e, fixtures.Hello)
	cfg := wasm.RunConfig{Args: []string{"hello"}, Stdout: io.Discard, MemoryLimit: 64 << 20}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if code, err := m.Run(ctx, cfg); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkCompileCold compiles the C hello module in a fresh engine with no
// cache: the cost a first run pays.
func BenchmarkCompileCold(b *testing.B) {
	benchCompile(b, fixtures.Hello, func(b *testing.B) []wazero.Option { return nil })
}

// BenchmarkCompileWASICold is BenchmarkCompileCold for the larger WASI
// fixture (~48 KB).
func BenchmarkCompileWASICold(b *testing.B) {
	benchCompile(b, fixtures.WASI, func(b *testing.B) []wazero.Option { return nil })
}

// BenchmarkCompileDiskCache compiles the C hello module in a fresh engine
// whose disk cache already holds it: what a fresh process pays.
func BenchmarkCompileDiskCache(b *testing.B) {
	dir := b.TempDir()
	warm := newEngine(b, wazero.WithCacheDir(dir))
	compile(b, warm, fixtures.Hello)
	benchCompile(b, fixtures.Hello, func(b *testing.B) []wazero.Option { return []wazero.Option{wazero.WithCacheDir(dir)} })
}

func benchCompile(b *testing.B, module []byte, opts func(*testing.B) []wazero.Option) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		e, err := wazero.New(ctx, opts(b)...)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := e.Compile(ctx, module); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		e.Close(ctx)
		b.StartTimer()
	}
}

// BenchmarkIdleInstanceMemory keeps 200 instances of the C WASI module alive,
// blocked reading stdin like idle containers, and reports the Go heap each
// one holds (bytes/instance).
func BenchmarkIdleInstanceMemory(b *testing.B) { benchIdle(b) }

// BenchmarkIdleInstanceMemoryWazeroWASI is BenchmarkIdleInstanceMemory with
// wazero's own WASI host, for comparison.
func BenchmarkIdleInstanceMemoryWazeroWASI(b *testing.B) { benchIdle(b, wazero.WithWazeroWASI()) }

func benchIdle(b *testing.B, opts ...wazero.Option) {
	e := newEngine(b, opts...)
	m := compile(b, e, fixtures.WASI)
	const n = 200
	// The timer runs through the whole round (start, idle, stop): with it
	// stopped, the benchmark framework would keep raising b.N to fill its
	// time budget with untimed rounds and never finish.
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		block := blockingReader{make(chan struct{})}
		var started, wg sync.WaitGroup
		for range n {
			wg.Add(1)
			started.Add(1)
			go func() {
				defer wg.Done()
				started.Done()
				m.Run(ctx, wasm.RunConfig{Args: []string{"w", "idle"}, Stdin: block})
			}()
		}
		started.Wait()
		time.Sleep(200 * time.Millisecond) // let every instance reach fd_read
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "bytes/instance")
		cancel()
		wg.Wait()
		close(block.ch)
	}
}
