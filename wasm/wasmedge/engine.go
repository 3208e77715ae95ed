//go:build wasmedge

package wasmedge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/second-state/WasmEdge-go/wasmedge"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasmbin"
)

// EngineName is what Engine.Name returns and the CLI's --engine value.
const EngineName = "wasmedge"

// WasmEdge error codes (WasmEdge_ErrCode) the engine tells apart.
const (
	errCodeTerminated  = 0x01 // proc_exit was called
	errCodeInterrupted = 0x02 // the execution was cancelled
)

// Option configures New.
type Option func(*options)

type options struct {
	interpreter bool
}

// WithInterpreter forces WasmEdge's interpreter even for AOT-compiled
// modules.
func WithInterpreter() Option {
	return func(o *options) { o.interpreter = true }
}

// Engine is the WasmEdge implementation of wasm.Engine.
type Engine struct {
	opts options

	mu     sync.Mutex
	mods   map[digest.Digest]*Module
	closed bool
}

var _ wasm.Engine = (*Engine)(nil)

// New creates a WasmEdge engine.
func New(ctx context.Context, opts ...Option) (wasm.Engine, error) {
	e := &Engine{mods: map[digest.Digest]*Module{}}
	for _, o := range opts {
		o(&e.opts)
	}
	wasmedge.SetLogErrorLevel()
	return e, nil
}

// Name implements wasm.Engine.
func (e *Engine) Name() string { return EngineName }

// Compile implements wasm.Engine: it loads and validates module once per
// digest and keeps the AST for every later run.
func (e *Engine) Compile(ctx context.Context, module []byte) (wasm.Module, error) {
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, fmt.Errorf("not a WebAssembly module (%d bytes, no \\0asm header): pass a .wasm file: %w", len(module), errdefs.ErrInvalidArgument)
	}
	dgst := digest.FromBytes(module)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("wasmedge engine is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if m, ok := e.mods[dgst]; ok {
		return m, nil
	}
	conf := e.configure(0)
	defer conf.Release()
	loader := wasmedge.NewLoaderWithConfig(conf)
	defer loader.Release()
	ast, err := loader.LoadBuffer(module)
	if err != nil {
		return nil, fmt.Errorf("invalid WebAssembly module %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	validator := wasmedge.NewValidatorWithConfig(conf)
	defer validator.Release()
	if err := validator.Validate(ast); err != nil {
		ast.Release()
		return nil, fmt.Errorf("invalid WebAssembly module %s: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	pages, _, err := wasmbin.MinMemoryPages(module)
	if err != nil {
		ast.Release()
		return nil, fmt.Errorf("module %s: reading memory section: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	var exports []string
	for _, ex := range ast.ListExports() {
		if ex.GetExternalType() == wasmedge.ExternType_Function {
			exports = append(exports, ex.GetExternalName())
		}
	}
	sort.Strings(exports)
	m := &Module{engine: e, digest: dgst, ast: ast, minMem: uint64(pages) * wasmbin.PageSize, exports: exports}
	e.mods[dgst] = m
	return m, nil
}

func (e *Engine) configure(limitPages uint) *wasmedge.Configure {
	conf := wasmedge.NewConfigure(wasmedge.WASI)
	if e.opts.interpreter {
		conf.SetForceInterpreter(true)
	}
	if limitPages > 0 {
		conf.SetMaxMemoryPage(limitPages)
	}
	return conf
}

// Close implements wasm.Engine. Runs already in progress finish on their own.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	for _, m := range e.mods {
		m.release()
	}
	e.mods = nil
	return nil
}

// Module is a module loaded and validated by Engine; see wasm.Module.
type Module struct {
	engine  *Engine
	digest  digest.Digest
	minMem  uint64
	exports []string

	mu  sync.RWMutex // guards ast against release during a run
	ast *wasmedge.AST
}

var _ wasm.Module = (*Module)(nil)

// Digest implements wasm.Module.
func (m *Module) Digest() digest.Digest { return m.digest }

// MinMemoryBytes implements wasm.Module.
func (m *Module) MinMemoryBytes() uint64 { return m.minMem }

// Exports implements wasm.Module; the names are sorted.
func (m *Module) Exports() []string { return slices.Clone(m.exports) }

func (m *Module) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ast != nil {
		m.ast.Release()
		m.ast = nil
	}
}

// Run implements wasm.Module. Each run gets its own WasmEdge VM.
func (m *Module) Run(ctx context.Context, cfg wasm.RunConfig) (int, error) {
	fn := cfg.Function
	if fn == "" {
		fn = wasm.DefaultFunction
	}
	if _, ok := slices.BinarySearch(m.exports, fn); !ok {
		return 0, fmt.Errorf("module %s exports no function %q (exports: %v): name one of them after '#' in the entrypoint: %w", m.digest, fn, m.exports, errdefs.ErrNotFound)
	}
	if cfg.MemoryLimit > 0 && m.minMem > cfg.MemoryLimit {
		return 0, fmt.Errorf("module %s needs %d bytes of memory to start but the memory limit is %d bytes: raise the limit (--memory, linux.resources.memory.limit): %w",
			m.digest, m.minMem, cfg.MemoryLimit, errdefs.ErrResourceExhausted)
	}
	if err := checkStdio(cfg); err != nil {
		return 0, err
	}
	env, preopens, err := wasiConfig(cfg)
	if err != nil {
		return 0, err
	}

	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ast == nil {
		return 0, fmt.Errorf("wasmedge engine is closed: %w", errdefs.ErrFailedPrecondition)
	}
	var limitPages uint
	if cfg.MemoryLimit > 0 && cfg.MemoryLimit < 1<<32 {
		limitPages = uint(cfg.MemoryLimit / wasmbin.PageSize)
	}
	conf := m.engine.configure(limitPages)
	defer conf.Release()
	vm := wasmedge.NewVMWithConfig(conf)
	defer vm.Release()
	wasi := vm.GetImportModule(wasmedge.WASI)
	wasi.InitWasi(cfg.Args, env, preopens)
	if err := vm.LoadWasmAST(m.ast); err != nil {
		return 0, fmt.Errorf("load module %s: %w: %w", m.digest, err, errdefs.ErrInvalidArgument)
	}
	if err := vm.Validate(); err != nil {
		return 0, fmt.Errorf("validate module %s: %w: %w", m.digest, err, errdefs.ErrInvalidArgument)
	}
	if err := vm.Instantiate(); err != nil {
		return wasm.ExitKilled, fmt.Errorf("instantiate module %s: %w: %w", m.digest, err, errdefs.ErrUnknown)
	}

	if cfg.Started != nil {
		cfg.Started(&instanceView{mod: vm.GetActiveModule()})
	}

	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	}
	defer cancel()
	async := vm.AsyncExecute(fn)
	if async == nil {
		return 0, fmt.Errorf("wasmedge could not start %q of module %s: %w", fn, m.digest, errdefs.ErrUnknown)
	}
	defer async.Release()
	stopped := false
	for !async.WaitFor(int(pollInterval.Milliseconds())) {
		if runCtx.Err() != nil {
			async.Cancel()
			stopped = true
			break
		}
	}
	_, err = async.GetResult()
	if stopped || runCtx.Err() != nil {
		killed := wasm.ExitKilled
		if cfg.Signal != nil {
			if s := cfg.Signal(); s > 0 {
				killed = 128 + s
			}
		}
		return killed, nil
	}
	if err == nil {
		return 0, nil
	}
	var res *wasmedge.Result
	if errors.As(err, &res) {
		switch res.GetCode() {
		case errCodeTerminated:
			return int(wasi.WasiGetExitCode()), nil
		case errCodeInterrupted:
			return wasm.ExitKilled, nil
		}
	}
	return wasm.ExitKilled, fmt.Errorf("wasm module %s trapped: %w: %w", m.digest, err, errdefs.ErrUnknown)
}

// instanceView is the wasm.Instance a RunConfig.Started callback gets.
type instanceView struct {
	mod *wasmedge.Module
}

// MemoryBytes implements wasm.Instance: the size of the memory the module
// exports as "memory" (what WASI toolchains export), 0 if none.
func (v *instanceView) MemoryBytes() uint64 {
	if v.mod == nil {
		return 0
	}
	mem := v.mod.FindMemory("memory")
	if mem == nil {
		return 0
	}
	return uint64(mem.GetPageSize()) * wasmbin.PageSize
}

// checkStdio refuses stdio WasmEdge cannot provide: its WASI uses the
// process's own descriptors 0, 1 and 2.
func checkStdio(cfg wasm.RunConfig) error {
	ok := func(v any, std *os.File) bool {
		if v == nil {
			return true
		}
		f, isFile := v.(*os.File)
		return isFile && f == std
	}
	if !ok(cfg.Stdin, os.Stdin) || !ok(cfg.Stdout, os.Stdout) || !ok(cfg.Stderr, os.Stderr) {
		return fmt.Errorf("the wasmedge engine can only give a guest the process's own stdio: use --engine wazero for redirected stdio: %w", errdefs.ErrNotImplemented)
	}
	return nil
}

// wasiConfig returns the environment (with PWD for a working directory) and
// the preopens in WasmEdge's "guest:host[:readonly]" form.
func wasiConfig(cfg wasm.RunConfig) (env, preopens []string, err error) {
	env = slices.Clone(cfg.Env)
	hasPWD := false
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("environment entry %q is not KEY=VALUE: fix process.env / --env: %w", kv, errdefs.ErrInvalidArgument)
		}
		hasPWD = hasPWD || k == "PWD"
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, nil, fmt.Errorf("working directory %q is not absolute: %w", cfg.Cwd, errdefs.ErrInvalidArgument)
	}
	if !hasPWD && cwd != "/" {
		env = append(env, "PWD="+path.Clean(cwd))
	}
	for _, mnt := range cfg.Mounts {
		if strings.Contains(mnt.HostPath, ":") || strings.Contains(mnt.GuestPath, ":") {
			return nil, nil, fmt.Errorf("mount %s at %s: the wasmedge engine cannot mount paths containing ':': %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
		}
		if !path.IsAbs(mnt.GuestPath) {
			return nil, nil, fmt.Errorf("mount %s: guest path %q is not absolute: %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
		}
		st, err := os.Stat(mnt.HostPath)
		if err != nil {
			return nil, nil, fmt.Errorf("mount %s at %s: %w: create the directory or fix the mount source: %w", mnt.HostPath, mnt.GuestPath, err, errdefs.ErrNotFound)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("mount %s at %s: not a directory (WASI preopens are directories): %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
		}
		p := path.Clean(mnt.GuestPath) + ":" + mnt.HostPath
		if mnt.ReadOnly {
			p += ":readonly"
		}
		preopens = append(preopens, p)
	}
	return env, preopens, nil
}

// pollInterval is how often a run checks its context while WasmEdge runs.
const pollInterval = 10 * time.Millisecond
