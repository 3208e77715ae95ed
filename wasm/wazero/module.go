package wazero

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasip1"
)

// compiledModule is a module compiled by engine; see wasm.Module.
type compiledModule struct {
	engine   *engine
	digest   digest.Digest
	compiled wazero.CompiledModule
	minMem   uint64
	exports  []string

	// wasiUnstable is set when the module imports wasi_unstable.
	wasiUnstable bool
}

var _ wasm.Module = (*compiledModule)(nil)

// Digest implements wasm.Module.
func (m *compiledModule) Digest() digest.Digest { return m.digest }

// MinMemoryBytes implements wasm.Module.
func (m *compiledModule) MinMemoryBytes() uint64 { return m.minMem }

// Exports implements wasm.Module; the names are sorted.
func (m *compiledModule) Exports() []string { return slices.Clone(m.exports) }

// Run implements wasm.Module.
func (m *compiledModule) Run(ctx context.Context, cfg wasm.RunConfig) (int, error) {
	fn := cfg.Function
	if fn == "" {
		fn = wasm.DefaultFunction
	}
	if _, ok := slices.BinarySearch(m.exports, fn); !ok {
		return 0, fmt.Errorf("module %s exports no function %q (exports: %v): name one of them after '#' in the entrypoint: %w", m.digest, fn, m.exports, errdefs.ErrNotFound)
	}
	if cfg.MemoryLimit > 0 && m.minMem > cfg.MemoryLimit {
		return 0, fmt.Errorf("module %s needs %s (%d bytes) of memory to start but the memory limit is %s (%d bytes): raise the limit (--memory, linux.resources.memory.limit): %w: %w",
			m.digest, formatBytes(m.minMem), m.minMem, formatBytes(cfg.MemoryLimit), cfg.MemoryLimit, wasm.ErrOutOfMemory, errdefs.ErrResourceExhausted)
	}
	if m.engine.closed.Load() {
		return 0, fmt.Errorf("wazero engine is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if err := checkOpenFileLimit(cfg.OpenFileLimit, len(cfg.Mounts)); err != nil {
		return 0, err
	}
	files := newOpenFiles(&m.engine.files, cfg.OpenFileLimit)
	defer files.finish()

	runCtx := ctx
	var cancel context.CancelFunc
	if cfg.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	} else {
		runCtx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	var mc wazero.ModuleConfig
	if m.engine.ownWASI {
		inst, err := m.wasiInstance(cfg, files, runCtx.Done())
		if err != nil {
			return 0, err
		}
		defer inst.Close()
		mc = anonymousModule
		runCtx = wasip1.WithInstance(runCtx, inst)
	} else {
		var closeMounts func()
		var err error
		if mc, closeMounts, err = m.moduleConfig(ctx, cfg, files); err != nil {
			return 0, err
		}
		defer closeMounts()
		mc = mc.WithNanosleep(func(ns int64) { sleepCtx(runCtx, ns) })
		if cfg.Stdin != nil {
			mc = mc.WithStdin(&cancelReader{r: cfg.Stdin, done: runCtx.Done()})
		}
		if cfg.Stdout != nil {
			mc = mc.WithStdout(newCancelWriter(cfg.Stdout, runCtx.Done()))
		}
		if cfg.Stderr != nil {
			mc = mc.WithStderr(newCancelWriter(cfg.Stderr, runCtx.Done()))
		}
	}
	// Every instance gets its memory from a per-run allocator: it caps the
	// memory, charges the sandbox's budget and lets a caller watch the
	// size without racing the guest (memory.go).
	limit := cfg.MemoryLimit
	if limit >= 1<<32 {
		limit = 0
	}
	view := &instanceView{}
	mem := &runMemory{pool: &m.engine.mem, limit: limit, budget: cfg.MemoryBudget, view: view, refused: cfg.MemoryRefused}
	defer mem.release()
	runCtx = experimental.WithMemoryAllocator(runCtx, mem)
	runCtx = context.WithValue(runCtx, openFilesKey{}, files)

	code, err := m.instantiateAndCall(runCtx, mc, fn, cfg.Started, view, mem, files)
	if runCtx.Err() != nil {
		// Stopped from the outside (cancel or timeout): whatever the guest
		// was doing, it was killed.
		killed := wasm.ExitKilled
		if cfg.Signal != nil {
			if s := cfg.Signal(); s > 0 {
				killed = 128 + s
			}
		}
		log.G(ctx).WithField("module", m.digest).WithError(runCtx.Err()).Debug("wasm instance stopped")
		return killed, nil
	}
	return code, err
}

func (m *compiledModule) instantiateAndCall(ctx context.Context, mc wazero.ModuleConfig, fn string, started func(wasm.Instance), view *instanceView, mem *runMemory, files *openFiles) (int, error) {
	inst, err := m.instantiate(ctx, mc, mem)
	if err != nil {
		return exitCode(m.digest, "instantiating", err)
	}
	defer inst.Close(context.WithoutCancel(ctx))
	if started != nil {
		started(view)
	}
	f := inst.ExportedFunction(fn)
	if f == nil { // checked against the export list already
		return 0, fmt.Errorf("module %s exports no function %q: %w", m.digest, fn, errdefs.ErrNotFound)
	}
	if len(f.Definition().ParamTypes()) != 0 {
		return 0, fmt.Errorf("function %q of module %s takes %d parameters; only functions without parameters can be an entrypoint: %w", fn, m.digest, len(f.Definition().ParamTypes()), errdefs.ErrInvalidArgument)
	}
	if _, err := f.Call(ctx); err != nil {
		code, err := exitCode(m.digest, "running", err)
		if r := files.takeRefusal(); r != 0 && errdefs.IsUnknown(err) {
			// wazero opens preopened mounts when the guest first asks
			// about them, and traps when that fails.
			err = fmt.Errorf("module %s could not open its mounts: %s: %w", m.digest, refusalText(r), errdefs.ErrResourceExhausted)
		}
		return code, err
	}
	return 0, nil
}

// instantiate instantiates the module. When its memory cannot get its
// initial size (budget exhausted, no address space) the allocator has no
// way to fail but returning nil, which wazero does not expect at
// instantiation and panics on: that panic becomes an error of kind
// errdefs.ErrResourceExhausted here; any other panic is re-raised.
func (m *compiledModule) instantiate(ctx context.Context, mc wazero.ModuleConfig, mem *runMemory) (inst api.Module, err error) {
	defer func() {
		if p := recover(); p != nil {
			if mem.startErr == nil {
				panic(p)
			}
			inst, err = nil, nil
		}
		if mem.startErr != nil && inst == nil {
			err = fmt.Errorf("module %s cannot start: %w: %w: %w", m.digest, mem.startErr, wasm.ErrOutOfMemory, errdefs.ErrResourceExhausted)
		}
	}()
	return m.engine.runtime.InstantiateModule(ctx, m.compiled, mc)
}

// exitCode turns an instantiate or call error into the guest's exit code:
// proc_exit(n) is exit n, anything else is a trap.
func exitCode(dgst digest.Digest, what string, err error) (int, error) {
	var exit *sys.ExitError
	if errdefs.IsResourceExhausted(err) {
		return wasm.ExitKilled, err
	}
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeContextCanceled, sys.ExitCodeDeadlineExceeded:
			return wasm.ExitKilled, nil
		}
		return int(exit.ExitCode()), nil
	}
	return wasm.ExitKilled, fmt.Errorf("wasm module %s trapped while %s: %w: %w", dgst, what, err, errdefs.ErrUnknown)
}

// moduleConfig maps a RunConfig onto a wazero module configuration. The
// returned func closes the mounts' directory fds once the instance is done.
func (m *compiledModule) moduleConfig(ctx context.Context, cfg wasm.RunConfig, files *openFiles) (_ wazero.ModuleConfig, closeMounts func(), err error) {
	var roots []*confinedFS
	closeAll := func() {
		for _, r := range roots {
			r.close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	env, err := guestEnv(cfg)
	if err != nil {
		return nil, nil, err
	}
	fsc := wazero.NewFSConfig()
	for _, mnt := range cfg.Mounts {
		guest, err := checkMount(mnt)
		if err != nil {
			return nil, nil, err
		}
		cfs, err := newConfinedFS(mnt.HostPath, files)
		if err != nil {
			return nil, nil, fmt.Errorf("mount %s at %s: %w: check the directory's permissions: %w", mnt.HostPath, mnt.GuestPath, err, errdefs.ErrFailedPrecondition)
		}
		roots = append(roots, cfs)
		var mfs experimentalsys.FS = cfs
		if mnt.ReadOnly {
			mfs = &sysfs.ReadFS{FS: mfs}
		}
		mfs = files.wrap(mfs) // counts open files (fdlimit.go)
		fsc = fsc.(sysfs.FSConfig).WithSysFSMount(mfs, guest)
	}
	mc := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions().
		WithArgs(cfg.Args...).
		WithFSConfig(fsc).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(randSource)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		mc = mc.WithEnv(k, v)
	}
	if cfg.Stdout != nil {
		mc = mc.WithStdout(cfg.Stdout)
	}
	if cfg.Stderr != nil {
		mc = mc.WithStderr(cfg.Stderr)
	}
	return mc, closeAll, nil
}

// guestEnv is the guest's environment: cfg.Env, checked, and PWD. WASI
// preview 1 has no working directory: wasi-libc programs start in "/". Go
// (wasip1) programs take theirs from $PWD, so it is set from cfg.Cwd unless
// the environment has one.
func guestEnv(cfg wasm.RunConfig) ([]string, error) {
	kvs, err := splitEnv(cfg.Env)
	if err != nil {
		return nil, err
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %q is not absolute: fix process.cwd / the image's WorkingDir: %w", cfg.Cwd, errdefs.ErrInvalidArgument)
	}
	if cwd == "/" {
		return cfg.Env, nil
	}
	for _, kv := range kvs {
		if kv[0] == "PWD" {
			return cfg.Env, nil
		}
	}
	return append(slices.Clip(cfg.Env), "PWD="+path.Clean(cwd)), nil
}

// checkMount checks a mount and returns its cleaned guest path: absolute,
// or relative (wasmtime's --dir . and --dir data), the preopen's name.
func checkMount(mnt wasm.Mount) (string, error) {
	guest := path.Clean(mnt.GuestPath)
	if mnt.GuestPath == "" || guest == ".." || strings.HasPrefix(guest, "../") {
		return "", fmt.Errorf("mount %s: guest path %q must be absolute, or a relative name such as \".\" that does not start with \"..\": %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
	}
	// unix.Stat, not os.Stat: no FileInfo allocated on every run.
	var st unix.Stat_t
	if err := unix.Stat(mnt.HostPath, &st); err != nil {
		return "", fmt.Errorf("mount %s at %s: %w: create the directory or fix the mount source: %w", mnt.HostPath, mnt.GuestPath, &fs.PathError{Op: "stat", Path: mnt.HostPath, Err: err}, errdefs.ErrNotFound)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("mount %s at %s: not a directory (WASI preopens are directories): %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
	}
	return guest, nil
}

// sleepCtx sleeps ns nanoseconds or until ctx is done, so a guest sleeping
// in poll_oneoff does not outlive its kill.
func sleepCtx(ctx context.Context, ns int64) {
	if ns <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// cancelReader is the guest's stdin: a read blocked on the caller's reader
// returns io.EOF as soon as the run is stopped, so a guest waiting for input
// can be killed. Reads happen only when the guest reads; nothing is read
// ahead.
type cancelReader struct {
	r       io.Reader
	done    <-chan struct{}
	pending chan readResult
	buf     []byte
}

type readResult struct {
	n   int
	err error
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.pending == nil {
		select {
		case <-c.done:
			return 0, io.EOF
		default:
		}
		if cap(c.buf) < len(p) {
			c.buf = make([]byte, len(p))
		}
		buf := c.buf[:len(p)]
		ch := make(chan readResult, 1)
		c.pending = ch
		go func() {
			n, err := c.r.Read(buf)
			ch <- readResult{n, err}
		}()
	}
	select {
	case res := <-c.pending:
		c.pending = nil
		n := copy(p, c.buf[:res.n])
		return n, res.err
	case <-c.done:
		return 0, io.EOF
	}
}
