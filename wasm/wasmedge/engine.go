//go:build wasmedge

package wasmedge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/second-state/WasmEdge-go/wasmedge"
	"golang.org/x/sync/singleflight"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasmbin"
)

// Built reports whether this binary has the WasmEdge engine (build tag
// "wasmedge").
const Built = true

// Option configures New.
type Option func(*options)

type options struct {
	cacheDir    string
	interpreter bool
	command     []string
}

// WithCacheDir keeps AOT-compiled modules in dir (created if missing), keyed
// by the module's digest and WasmEdge's version, so that a module is compiled
// once per host rather than once per process. Without it the engine compiles
// into a temporary directory removed by Close.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithInterpreter runs modules on WasmEdge's interpreter instead of AOT
// native code: no compilation, slower execution.
func WithInterpreter() Option { return func(o *options) { o.interpreter = true } }

// WithChildCommand sets the command that starts a run's child process
// (default: this process's own executable, /proc/self/exe). The command must
// be a program that links this package, whose init takes over when it finds
// the child marker in its environment. Tests and launchers use it.
func WithChildCommand(argv ...string) Option {
	return func(o *options) { o.command = slices.Clone(argv) }
}

// Engine is the WasmEdge implementation of wasm.Engine. Compile validates a
// module in the calling process and AOT-compiles it into the cache; each Run
// happens in a child process (see child.go) so that every container has its
// own stdio, its own kill and its own memory.
type Engine struct {
	opts     options
	cache    *aotCache
	tempDir  string // removed by Close when the cache is temporary
	childCmd []string

	group singleflight.Group
	mu    sync.Mutex
	mods  map[digest.Digest]*Module
	// closed is set by Close; guarded by mu.
	closed bool
}

var _ wasm.Engine = (*Engine)(nil)

// New creates a WasmEdge engine.
func New(ctx context.Context, opts ...Option) (wasm.Engine, error) {
	e := &Engine{mods: map[digest.Digest]*Module{}}
	for _, o := range opts {
		o(&e.opts)
	}
	dir := e.opts.cacheDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "kuasar-wasmedge-")
		if err != nil {
			return nil, fmt.Errorf("wasmedge: temporary AOT directory: %w", err)
		}
		e.tempDir, dir = tmp, tmp
	}
	cache, err := newAOTCache(dir)
	if err != nil {
		if e.tempDir != "" {
			os.RemoveAll(e.tempDir)
		}
		return nil, err
	}
	e.cache = cache
	e.childCmd = e.opts.command
	if len(e.childCmd) == 0 {
		e.childCmd = []string{"/proc/self/exe"}
	}
	wasmedge.SetLogErrorLevel()
	return e, nil
}

// Name implements wasm.Engine.
func (e *Engine) Name() string { return EngineName }

// Compile implements wasm.Engine: the module is loaded and validated once per
// digest in this process, then AOT-compiled into the cache unless an earlier
// process already did (see aotCache). Concurrent compiles of the same bytes
// share one compilation.
func (e *Engine) Compile(ctx context.Context, module []byte) (wasm.Module, error) {
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, fmt.Errorf("not a WebAssembly module (%d bytes, no \\0asm header): pass a .wasm file: %w", len(module), errdefs.ErrInvalidArgument)
	}
	dgst := digest.FromBytes(module)
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("wasmedge engine is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if m, ok := e.mods[dgst]; ok {
		e.mu.Unlock()
		return m, nil
	}
	e.mu.Unlock()
	v, err, _ := e.group.Do(dgst.String(), func() (any, error) {
		m, err := e.compile(ctx, dgst, module)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.closed {
			return nil, fmt.Errorf("wasmedge engine is closed: %w", errdefs.ErrFailedPrecondition)
		}
		e.mods[dgst] = m
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Module), nil
}

func (e *Engine) compile(ctx context.Context, dgst digest.Digest, module []byte) (*Module, error) {
	conf := wasmedge.NewConfigure(wasmedge.WASI)
	defer conf.Release()
	loader := wasmedge.NewLoaderWithConfig(conf)
	defer loader.Release()
	ast, err := loader.LoadBuffer(module)
	if err != nil {
		return nil, fmt.Errorf("invalid WebAssembly module %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	defer ast.Release()
	validator := wasmedge.NewValidatorWithConfig(conf)
	defer validator.Release()
	if err := validator.Validate(ast); err != nil {
		return nil, fmt.Errorf("invalid WebAssembly module %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	pages, _, err := wasmbin.MinMemoryPages(module)
	if err != nil {
		return nil, fmt.Errorf("module %s: reading memory section: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	var exports []string
	for _, ex := range ast.ListExports() {
		if ex.GetExternalType() == wasmedge.ExternType_Function {
			exports = append(exports, ex.GetExternalName())
		}
	}
	sort.Strings(exports)
	var file string
	if e.opts.interpreter {
		file, err = e.cache.wasm(ctx, dgst, module)
	} else {
		file, err = e.cache.aot(ctx, dgst, module)
	}
	if err != nil {
		return nil, err
	}
	return &Module{engine: e, digest: dgst, file: file, minMem: uint64(pages) * wasmbin.PageSize, exports: exports}, nil
}

// Close implements wasm.Engine. Runs in progress are not stopped (their
// contexts are); a temporary AOT directory is removed.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.mods = nil
	if e.tempDir != "" {
		return os.RemoveAll(e.tempDir)
	}
	return nil
}

// Module is a module validated and compiled by Engine; see wasm.Module.
type Module struct {
	engine  *Engine
	digest  digest.Digest
	file    string // the AOT shared object (or the .wasm for the interpreter)
	minMem  uint64
	exports []string
}

var _ wasm.Module = (*Module)(nil)

// Digest implements wasm.Module.
func (m *Module) Digest() digest.Digest { return m.digest }

// MinMemoryBytes implements wasm.Module.
func (m *Module) MinMemoryBytes() uint64 { return m.minMem }

// Exports implements wasm.Module; the names are sorted.
func (m *Module) Exports() []string { return slices.Clone(m.exports) }
