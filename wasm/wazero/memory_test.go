package wazero_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
)

// reached parses membomb's "reached=BYTES" line.
func reached(t testing.TB, stdout string) uint64 {
	t.Helper()
	v, ok := strings.CutPrefix(strings.TrimSpace(stdout), "reached=")
	n, err := strconv.ParseUint(v, 10, 64)
	if !ok || err != nil {
		t.Fatalf("membomb printed %q, want reached=BYTES", stdout)
	}
	return n
}

// TestMemoryBombRefusedAtLimit: a guest that grows until refused stops at
// its limit (memory.grow returns -1, the guest keeps running and exits on
// its own), and every refusal is reported through MemoryRefused.
func TestMemoryBombRefusedAtLimit(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.MemBomb)
	for _, limit := range []uint64{8 << 20, 48 << 20, 96 << 20} {
		t.Run(fmt.Sprint(limit>>20, "MiB"), func(t *testing.T) {
			var refused atomic.Uint64
			var last atomic.Uint64
			r := run(t, m, wasm.RunConfig{Args: []string{"membomb"}, MemoryLimit: limit,
				MemoryRefused: func(size uint64) { refused.Add(1); last.Store(size) }})
			if r.err != nil || r.code != fixtures.MemBombRefusedExit {
				t.Fatalf("exit %d, %v (stderr %q); want %d", r.code, r.err, r.stderr, fixtures.MemBombRefusedExit)
			}
			got := reached(t, r.stdout)
			if got > limit || got+1<<20 <= limit {
				t.Errorf("guest reached %d bytes; want within 1 MiB under the limit %d", got, limit)
			}
			if refused.Load() != 1 || last.Load() <= limit {
				t.Errorf("MemoryRefused called %d times, last size %d; want once, past %d", refused.Load(), last.Load(), limit)
			}
		})
	}
}

// TestMemoryBudgetShared: two instances charging one budget together never
// pass it, whatever their own limits; the budget is refunded when they end.
func TestMemoryBudgetShared(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.MemBomb)
	const budgetBytes = 64 << 20
	budget := wasm.NewMemoryBudget(budgetBytes)
	// One guest takes 40 MiB and holds it while the other bombs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	holder := make(chan result, 1)
	var holding sync.WaitGroup
	holding.Add(1)
	go func() {
		cfg := wasm.RunConfig{Args: []string{"membomb", "40", "30"}, MemoryLimit: 512 << 20, MemoryBudget: budget}
		var once sync.Once
		cfg.Stdout = writerFunc(func(p []byte) { once.Do(holding.Done) })
		code, err := m.Run(ctx, cfg)
		holder <- result{code: code, err: err}
	}()
	holding.Wait()
	used := budget.Used()
	if used < 40<<20 {
		t.Fatalf("budget used %d while the holder holds 40 MiB", used)
	}
	r := run(t, m, wasm.RunConfig{Args: []string{"membomb"}, MemoryLimit: 512 << 20, MemoryBudget: budget})
	if r.code != fixtures.MemBombRefusedExit {
		t.Fatalf("bomb exit %d, %v; want %d", r.code, r.err, fixtures.MemBombRefusedExit)
	}
	if got := reached(t, r.stdout); got+used > budgetBytes {
		t.Errorf("bomb reached %d bytes next to %d held: %d, over the budget %d", got, used, got+used, budgetBytes)
	}
	if budget.Used() != used {
		t.Errorf("budget used %d after the bomb ended; want the holder's %d", budget.Used(), used)
	}
	cancel()
	<-holder
	if budget.Used() != 0 {
		t.Errorf("budget used %d after both ended; want 0", budget.Used())
	}
}

// TestMemoryBudgetAtStart: an instance whose initial memory does not fit
// the budget does not start, with an error of kind ResourceExhausted.
func TestMemoryBudgetAtStart(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.BigMem) // 1000 pages
	budget := wasm.NewMemoryBudget(32 << 20)
	r := run(t, m, wasm.RunConfig{MemoryBudget: budget})
	if !errdefs.IsResourceExhausted(r.err) || !errors.Is(r.err, wasm.ErrOutOfMemory) || !strings.Contains(r.err.Error(), "32 MiB") {
		t.Fatalf("err = %v; want ResourceExhausted, out of memory, naming the 32 MiB budget", r.err)
	}
	if budget.Used() != 0 {
		t.Errorf("budget used %d after a refused start", budget.Used())
	}
	budget.SetLimit(64 << 20)
	if r := run(t, m, wasm.RunConfig{MemoryBudget: budget}); r.err != nil || r.code != 0 {
		t.Fatalf("with a 64 MiB budget: exit %d, %v", r.code, r.err)
	}
}

// BenchmarkMemoryGrow measures memory.grow by one page (reactor#grow1k: 1024
// grows per run), reported per grow.
func BenchmarkMemoryGrow(b *testing.B) {
	e := newEngine(b)
	m := compile(b, e, fixtures.Reactor)
	cfg := wasm.RunConfig{Function: "grow1k", MemoryLimit: 512 << 20}
	ctx := context.Background()
	for b.Loop() {
		if code, err := m.Run(ctx, cfg); code != 0 || err != nil {
			b.Fatal(code, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1024, "ns/grow")
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }
