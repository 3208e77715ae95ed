package wasmbackend

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// AnnotationEngine on a pod names the Wasm engine its containers run on
// ("wazero" or "wasmedge"); without it the runtime handler's wasm_engine,
// then the backend's default (WithDefaultEngine) decide.
const AnnotationEngine = "kuasar.io/wasm-engine"

// WithDefaultEngine names the engine of sandboxes that ask for none
// ([wasm] engine): "" or "wazero" is the engine New creates or
// WithEngine gives; "wasmedge" needs a -tags wasmedge build.
func WithDefaultEngine(name string) Option { return func(b *Backend) { b.defaultEngine = name } }

// engineFor returns the engine sb's containers run on: the one sb asks
// for (backend.Sandbox.WasmEngine, else its pod annotation), else the
// default. Engines other than the backend's own are created on first use
// and shared by every sandbox that names them.
func (b *Backend) engineFor(ctx context.Context, name string) (wasm.Engine, error) {
	if name == "" {
		name = b.defaultEngine
	}
	if name == "" || name == b.engine.Name() {
		return b.engine, nil
	}
	b.enginesMu.Lock()
	defer b.enginesMu.Unlock()
	if e, ok := b.engines[name]; ok {
		return e, nil
	}
	var e wasm.Engine
	var err error
	switch name {
	case wazero.EngineName:
		opts := []wazero.Option{wazero.WithOpenFileBudget(b.fileBudget)}
		if b.cacheDir != "" {
			opts = append(opts, wazero.WithCacheDir(b.cacheDir))
		}
		e, err = wazero.New(ctx, opts...)
	case wasmedge.EngineName:
		var opts []wasmedge.Option
		if b.cacheDir != "" {
			opts = append(opts, wasmedge.WithCacheDir(b.cacheDir))
		}
		e, err = wasmedge.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("wasm engine %q is unknown: set %s (or the runtime handler's wasm_engine) to %q or %q: %w",
			name, AnnotationEngine, wazero.EngineName, wasmedge.EngineName, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("wasm engine %s: %w", name, err)
	}
	if b.engines == nil {
		b.engines = map[string]wasm.Engine{}
	}
	b.engines[name] = e
	log.G(ctx).WithField("engine", name).Info("wasm engine created")
	return e, nil
}

// moduleCache returns the module cache of the engine called name, shared
// by every sandbox on it.
func (b *Backend) moduleCache(name string) *wasmtask.ModuleCache {
	b.enginesMu.Lock()
	defer b.enginesMu.Unlock()
	c, ok := b.modules[name]
	if !ok {
		if b.modules == nil {
			b.modules = map[string]*wasmtask.ModuleCache{}
		}
		c = wasmtask.NewModuleCache()
		b.modules[name] = c
	}
	return c
}

// closeEngines closes the engines engineFor created.
func (b *Backend) closeEngines(ctx context.Context) []error {
	b.enginesMu.Lock()
	defer b.enginesMu.Unlock()
	var errs []error
	for _, e := range b.engines {
		errs = append(errs, e.Close(ctx))
	}
	b.engines = nil
	b.modules = nil
	return errs
}
