//go:build !wasmedge

package wasmedge

import (
	"context"

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
