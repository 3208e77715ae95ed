// Package wazero implements wasm.Engine on wazero, the pure-Go WebAssembly
// runtime, so that Wasm workloads run inside the kuasar process with no cgo
// and no external engine.
//
// One Engine holds one wazero runtime with WASI preview 1 instantiated (under
// both wasi_snapshot_preview1 and the older wasi_unstable name): kuasar's own
// host (package wasm/internal/wasip1), or wazero's with WithWazeroWASI. Modules are
// compiled once per content digest and then instantiated anonymously per run,
// so thousands of instances of the same module can run concurrently. Per-run
// memory limits are enforced by a per-instance memory allocator rather than
// by the runtime-wide page limit, so one compiled module serves every limit.
package wazero

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"golang.org/x/sync/singleflight"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasip1"
	"github.com/kuasar-go/kuasar/wasm/internal/wasmbin"
)

// EngineName is what the engine's Name returns (and what --engine and
// the [wasm] engine setting select).
const EngineName = "wazero"

// wasmMagic is the header every WebAssembly binary starts with.
var wasmMagic = []byte("\x00asm")

// Option configures New.
type Option func(*options)

type options struct {
	cacheDir    string
	interpreter bool
	fileBudget  int
	wazeroWASI  bool
}

// WithCacheDir keeps compiled native code in dir (created if missing), so a
// fresh process compiling the same module skips code generation. An empty dir
// keeps the cache in memory only.
func WithCacheDir(dir string) Option {
	return func(o *options) { o.cacheDir = dir }
}

// WithCompiler selects wazero's optimizing compiler (the default on amd64 and
// arm64): slower to compile, much faster to run.
func WithCompiler() Option {
	return func(o *options) { o.interpreter = false }
}

// WithInterpreter selects wazero's interpreter: no compilation cost, slow
// execution; the only choice on platforms the compiler does not support.
func WithInterpreter() Option {
	return func(o *options) { o.interpreter = true }
}

// WithWazeroWASI serves guests with wazero's own WASI preview-1 host
// instead of kuasar's (package wasm/internal/wasip1, the default). wazero's
// host approximates the specification (rights are not enforced, no hard
// links, stdio fdstat, poll on stdin and more differ); it is kept as a
// fallback while kuasar's host is new.
func WithWazeroWASI() Option {
	return func(o *options) { o.wazeroWASI = true }
}

// engine is the wazero implementation of wasm.Engine.
type engine struct {
	runtime wazero.Runtime
	cache   wazero.CompilationCache

	closed atomic.Bool
	// ownWASI is set when guests get kuasar's WASI host (wasip1) rather
	// than wazero's.
	ownWASI bool
	mem     memPool    // reusable small linear memories, see memory.go
	files   fileBudget // files open in all instances, see fdlimit.go

	unstableOnce sync.Once
	unstableErr  error

	group singleflight.Group
	mu    sync.Mutex
	mods  map[digest.Digest]*compiledModule
}

var _ wasm.Engine = (*engine)(nil)

// New creates an engine with its own wazero runtime and WASI host modules.
func New(ctx context.Context, opts ...Option) (wasm.Engine, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var cfg wazero.RuntimeConfig
	if o.interpreter {
		cfg = wazero.NewRuntimeConfigInterpreter()
	} else {
		cfg = wazero.NewRuntimeConfig()
	}
	cfg = cfg.WithCloseOnContextDone(true)
	var cache wazero.CompilationCache
	if o.cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(o.cacheDir)
		if err != nil {
			return nil, fmt.Errorf("wazero compilation cache in %s: %w: %w", o.cacheDir, err, errdefs.ErrInvalidArgument)
		}
		cache = c
		cfg = cfg.WithCompilationCache(cache)
	}
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	e := &engine{runtime: r, cache: cache, mods: map[digest.Digest]*compiledModule{}, files: fileBudget{limit: int64(o.fileBudget)}, ownWASI: !o.wazeroWASI}
	if err := e.instantiateWASI(ctx, wasi_snapshot_preview1.ModuleName); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	return e, nil
}

// instantiateWASI instantiates the engine's WASI host under name.
func (e *engine) instantiateWASI(ctx context.Context, name string) error {
	if e.ownWASI {
		return wasip1.Instantiate(ctx, e.runtime, name)
	}
	b, err := wasiHostModule(ctx, e.runtime, name)
	if err == nil {
		_, err = b.Instantiate(ctx)
	}
	return err
}

// Name implements wasm.Engine.
func (e *engine) Name() string { return EngineName }

// Compile implements wasm.Engine. Concurrent compiles of the same bytes
// compile once; later compiles return the module from memory.
func (e *engine) Compile(ctx context.Context, module []byte) (wasm.Module, error) {
	m, err := e.compile(ctx, module)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (e *engine) compile(ctx context.Context, module []byte) (*compiledModule, error) {
	if e.closed.Load() {
		return nil, fmt.Errorf("wazero engine is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if !bytes.HasPrefix(module, wasmMagic) {
		return nil, fmt.Errorf("not a WebAssembly module (%d bytes, no \\0asm header): pass a .wasm file: %w", len(module), errdefs.ErrInvalidArgument)
	}
	sum := sha256.Sum256(module)
	dgst := digest.NewDigestFromEncoded(digest.SHA256, fmt.Sprintf("%x", sum[:]))
	e.mu.Lock()
	m, ok := e.mods[dgst]
	e.mu.Unlock()
	if ok {
		return m, nil
	}
	v, err, _ := e.group.Do(string(dgst), func() (any, error) {
		e.mu.Lock()
		m, ok := e.mods[dgst]
		e.mu.Unlock()
		if ok {
			return m, nil
		}
		// Compilation must not be cut short by one caller's context: its
		// result is shared with every concurrent caller.
		cctx := experimental.WithCompilationWorkers(context.WithoutCancel(ctx), runtime.GOMAXPROCS(0))
		cm, err := e.runtime.CompileModule(cctx, module)
		if err != nil {
			return nil, fmt.Errorf("invalid WebAssembly module %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
		}
		nm, err := newModule(dgst, module, cm)
		if err != nil {
			cm.Close(ctx)
			return nil, err
		}
		if nm.wasiUnstable {
			if err := e.instantiateWASIUnstable(ctx); err != nil {
				cm.Close(ctx)
				return nil, err
			}
		}
		nm.engine = e
		e.mu.Lock()
		e.mods[dgst] = nm
		e.mu.Unlock()
		return nm, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*compiledModule), nil
}

// instantiateWASIUnstable provides WASI under its pre-snapshot name, which
// modules built by older toolchains import. It is done on first need, keeping
// it off the start-up path of every process.
func (e *engine) instantiateWASIUnstable(ctx context.Context) error {
	e.unstableOnce.Do(func() {
		if err := e.instantiateWASI(context.WithoutCancel(ctx), wasiUnstable); err != nil {
			e.unstableErr = fmt.Errorf("instantiate %s: %w", wasiUnstable, err)
		}
	})
	return e.unstableErr
}

const wasiUnstable = "wasi_unstable"

// Close implements wasm.Engine: it closes the runtime (stopping every running
// instance), releases every compiled module and closes the disk cache.
func (e *engine) Close(ctx context.Context) error {
	if e.closed.Swap(true) {
		return nil
	}
	e.mu.Lock()
	e.mods = map[digest.Digest]*compiledModule{}
	e.mu.Unlock()
	// Instances still running stop as killed ones do.
	err := e.runtime.CloseWithExitCode(ctx, wasm.ExitKilled)
	e.mem.close()
	if e.cache != nil {
		err = errors.Join(err, e.cache.Close(ctx))
	}
	return err
}

// supportedImports are the host modules the engine provides.
var supportedImports = map[string]bool{
	wasi_snapshot_preview1.ModuleName: true,
	wasiUnstable:                      true,
}

func newModule(dgst digest.Digest, bin []byte, cm wazero.CompiledModule) (*compiledModule, error) {
	unstable := false
	for _, f := range cm.ImportedFunctions() {
		mod, name, _ := f.Import()
		unstable = unstable || mod == wasiUnstable
		if !supportedImports[mod] {
			return nil, fmt.Errorf("module %s imports %s.%s, but kuasar provides only WASI preview 1 (wasi_snapshot_preview1): rebuild it for wasm32-wasi / wasip1: %w", dgst, mod, name, errdefs.ErrInvalidArgument)
		}
	}
	for _, mem := range cm.ImportedMemories() {
		mod, name, _ := mem.Import()
		return nil, fmt.Errorf("module %s imports its memory from %s.%s, which kuasar does not provide: rebuild it to define its own memory: %w", dgst, mod, name, errdefs.ErrInvalidArgument)
	}
	pages, _, err := wasmbin.MinMemoryPages(bin)
	if err != nil {
		return nil, fmt.Errorf("module %s: reading memory section: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	exports := make([]string, 0, len(cm.ExportedFunctions()))
	for name := range cm.ExportedFunctions() {
		exports = append(exports, name)
	}
	sort.Strings(exports)
	return &compiledModule{
		digest:   dgst,
		compiled: cm,
		minMem:   uint64(pages) * wasmbin.PageSize,
		exports:  exports,

		wasiUnstable: unstable,
	}, nil
}

func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func splitEnv(env []string) ([][2]string, error) {
	out := make([][2]string, 0, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("environment entry %q is not KEY=VALUE: fix process.env / --env: %w", kv, errdefs.ErrInvalidArgument)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

var randSource = rand.Reader
