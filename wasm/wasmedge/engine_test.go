//go:build wasmedge

package wasmedge_test

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/enginetest"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// cacheDir is one AOT cache shared by every test of the package, so that
// each fixture is compiled once per test binary run.
var cacheDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kuasar-wasmedge-test-")
	if err != nil {
		panic(err)
	}
	cacheDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newEngine(t testing.TB, opts ...wasmedge.Option) wasm.Engine {
	t.Helper()
	e, err := wasmedge.New(context.Background(), append([]wasmedge.Option{wasmedge.WithCacheDir(cacheDir)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func compile(t testing.TB, e wasm.Engine, b []byte) wasm.Module {
	t.Helper()
	m, err := e.Compile(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type result struct {
	code           int
	err            error
	stdout, stderr string
}

func run(t testing.TB, m wasm.Module, cfg wasm.RunConfig) result {
	t.Helper()
	var out, errb bytes.Buffer
	cfg.Stdout, cfg.Stderr = &out, &errb
	code, err := m.Run(context.Background(), cfg)
	return result{code, err, out.String(), errb.String()}
}

// TestConformance runs the engine conformance suite that wazero also runs
// (wasm/internal/enginetest): the same inputs must give the same exit codes,
// output, effects and error kinds, except for WasmEdge's documented
// departures declared here.
func TestConformance(t *testing.T) {
	enginetest.Run(t, func(tb testing.TB) wasm.Engine { return newEngine(tb) }, enginetest.Departures{
		NoSnapshot0:             true, // WasmEdge serves only wasi_snapshot_preview1
		PlainSizes:              true, // its memory-limit error gives bytes only
		RefusesEscapingSymlinks: true, // its own path resolution refuses them (EPERM)
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
