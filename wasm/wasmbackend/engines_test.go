package wasmbackend_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
)

// TestEngineSelection: a sandbox names its engine by pod annotation or
// by backend.Sandbox.WasmEngine (the runtime handler's wasm_engine); an
// unknown name is refused, and wasmedge in a build without it says how to
// get one.
func TestEngineSelection(t *testing.T) {
	b := newBackend(t)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	type selCase struct {
		name     string
		ann      string
		field    string
		wantKind error
		wantMsg  string
	}
	tests := []selCase{
		{name: "default"},
		{name: "wazero by annotation", ann: "wazero"},
		{name: "wazero by handler", field: "wazero"},
		{name: "unknown engine", ann: "wasmtime", wantKind: errdefs.ErrInvalidArgument, wantMsg: `"wasmtime"`},
		{name: "unknown engine by handler", field: "wasmtime", wantKind: errdefs.ErrInvalidArgument, wantMsg: `"wasmtime"`},
	}
	if !wasmedge.Built {
		tests = append(tests, selCase{name: "wasmedge not built", ann: "wasmedge", wantKind: errdefs.ErrNotImplemented, wantMsg: "make wasmedge"})
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := backend.Sandbox{ID: "sel" + string(rune('a'+i)), Namespace: ns, StateDir: filepath.Join(t.TempDir(), "state"), WasmEngine: tc.field}
			if tc.ann != "" {
				sb.Annotations = map[string]string{"kuasar.io/wasm-engine": tc.ann}
			}
			os.MkdirAll(sb.StateDir, 0o700)
			inst, err := b.Start(ctx, sb)
			if tc.wantKind == nil {
				if err != nil {
					t.Fatal(err)
				}
				inst.Shutdown(ctx)
				return
			}
			if !errors.Is(err, tc.wantKind) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Start = %v, want %v naming %s", err, tc.wantKind, tc.wantMsg)
			}
		})
	}
}

// TestConfigEngine: [wasm] engine accepts both engines; a build without
// WasmEdge refuses to start with it, naming how to get one.
func TestConfigEngine(t *testing.T) {
	c := wasmbackend.DefaultConfig()
	c.Engine = wasmedge.EngineName
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(engine = wasmedge) = %v", err)
	}
	_, err := c.Options()
	switch {
	case wasmedge.Built && err != nil:
		t.Fatalf("Options in a wasmedge build = %v", err)
	case !wasmedge.Built && (!errors.Is(err, errdefs.ErrNotImplemented) || !strings.Contains(err.Error(), "make wasmedge")):
		t.Fatalf("Options without WasmEdge = %v, want ErrNotImplemented naming make wasmedge", err)
	}
	c.Engine = "wasmtime"
	if err := c.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "wasm.engine") {
		t.Fatalf("Validate(engine = wasmtime) = %v, want ErrInvalidArgument naming wasm.engine", err)
	}
}
