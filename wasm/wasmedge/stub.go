//go:build !wasmedge

package wasmedge

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/wasm"
)

// Built reports whether this binary has the WasmEdge engine (build tag
// "wasmedge").
const Built = false

// Option configures New.
type Option func()

// WithCacheDir is accepted and ignored: this build has no WasmEdge engine.
func WithCacheDir(string) Option { return func() {} }

// WithInterpreter is accepted and ignored: this build has no WasmEdge engine.
func WithInterpreter() Option { return func() {} }

// New fails in this build, naming how to get one with WasmEdge.
func New(context.Context, ...Option) (wasm.Engine, error) {
	return nil, ErrNotBuilt
}

// ErrNotBuilt is New's error in builds without the "wasmedge" tag.
var ErrNotBuilt = fmt.Errorf("this binary was built without the WasmEdge engine: build it with `make wasmedge` (go build -tags wasmedge; needs libwasmedge 0.14, which `make wasmedge` takes from a Debian 13 root when the host has none) or use the wazero engine: %w", errdefs.ErrNotImplemented)
