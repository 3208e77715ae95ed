//go:build wasmedge

package wasmedge_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

func TestRun(t *testing.T) {
	ctx := context.Background()
	e, err := wasmedge.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(ctx)
	tests := []struct {
		name     string
		module   []byte
		cfg      wasm.RunConfig
		wantCode int
		wantKind error
	}{
		{name: "hello", module: fixtures.Hello, cfg: wasm.RunConfig{Args: []string{"hello"}}},
		{name: "proc_exit", module: fixtures.ExitCode, wantCode: fixtures.ExitCodeValue},
		{name: "exit arg", module: fixtures.WASI, cfg: wasm.RunConfig{Args: []string{"w", "exit", "9"}}, wantCode: 9},
		{name: "write ro fails", module: fixtures.WASI, cfg: wasm.RunConfig{Args: []string{"w", "write", "/ro/x", "y"}, Mounts: []wasm.Mount{{HostPath: t.TempDir(), GuestPath: "/ro", ReadOnly: true}}}, wantCode: 1},
		{name: "function", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "fail"}, wantCode: 3},
		{name: "missing function", module: fixtures.Reactor, wantKind: errdefs.ErrNotFound},
		{name: "memory min over limit", module: fixtures.BigMem, cfg: wasm.RunConfig{MemoryLimit: 32 << 20}, wantKind: errdefs.ErrResourceExhausted},
		{name: "memory grow refused", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "grow", MemoryLimit: 64 << 20}, wantCode: 1},
		{name: "timeout", module: fixtures.Loop, cfg: wasm.RunConfig{Timeout: 100 * time.Millisecond}, wantCode: wasm.ExitKilled},
		{name: "trap", module: fixtures.Reactor, cfg: wasm.RunConfig{Function: "trap"}, wantCode: wasm.ExitKilled, wantKind: errdefs.ErrUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := e.Compile(ctx, tc.module)
			if err != nil {
				t.Fatal(err)
			}
			code, err := m.Run(ctx, tc.cfg)
			if tc.wantKind != nil && !errors.Is(err, tc.wantKind) || tc.wantKind == nil && err != nil {
				t.Fatalf("err = %v, want %v", err, tc.wantKind)
			}
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d", code, tc.wantCode)
			}
		})
	}
	for _, bad := range [][]byte{fixtures.NotWasm, fixtures.Truncated} {
		if _, err := e.Compile(ctx, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Compile(bad) = %v, want ErrInvalidArgument", err)
		}
	}
}
