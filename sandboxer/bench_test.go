package sandboxer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// TestWasmBackendHello runs the hello module through the real wasm backend
// over the sandboxer's own sockets and checks the exit code and that nothing
// is left in the state directory.
func TestWasmBackendHello(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for i := range 3 {
		req := r.bundle(t, "hello", []string{"/hello.wasm"})
		code, err := r.runOnce(ctx, fmt.Sprintf("sb%d", i), req)
		if err != nil || code != 0 {
			t.Fatalf("run %d: exit %d, %v", i, code, err)
		}
	}
	code, err := r.runOnce(ctx, "exit", r.bundle(t, "exit", []string{"/wasi.wasm", "exit", "7"}))
	if err != nil || code != 7 {
		t.Fatalf("exit code: %d, %v", code, err)
	}
	entries, _ := os.ReadDir(filepath.Join(r.svc.StateDir(), "sandboxes"))
	if len(entries) != 0 {
		t.Fatalf("left in state dir: %v", entries)
	}
	_ = fixtures.HelloGreeting
}

// BenchmarkSandboxHello measures one sandbox's whole life with the hello
// module over the sandboxer's gRPC Sandbox API and ttrpc Task API sockets:
// sandbox Create+Start, task Create+Start, Wait for exit, Delete, Stop,
// Shutdown. Reports p50/p90 per run (target: p50 <= 2 ms) and the CPU
// time per run (cpu-ms/op: the sandboxer and its client together, both in
// this process), which, unlike wall time, a loaded machine barely moves.
func BenchmarkSandboxHello(b *testing.B) {
	r := newRig(b)
	ctx := context.Background()
	req := r.bundle(b, "hello", []string{"/hello.wasm"})
	if _, err := r.runOnce(ctx, "warm", req); err != nil {
		b.Fatal(err)
	}
	durs := make([]time.Duration, 0, b.N)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		code, err := r.runOnce(ctx, fmt.Sprintf("b%d", i), req)
		if err != nil || code != 0 {
			b.Fatalf("exit %d, %v", code, err)
		}
		durs = append(durs, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, durs)
	if len(durs) > 0 {
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(len(durs)), "cpu-ms/op")
	}
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportPercentiles(b *testing.B, durs []time.Duration) {
	if len(durs) == 0 {
		return
	}
	slices.Sort(durs)
	pct := func(p float64) float64 {
		return float64(durs[int(p*float64(len(durs)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.9), "p90-ms")
}
