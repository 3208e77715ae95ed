// Package wasmbackend is the "wasm" sandbox backend: pods whose containers are
// WebAssembly modules run inside the sandboxer process, on a shared
// wasm.Engine, with no VM and no shim process.
//
// Each sandbox gets its own Task API service (task/wasmtask) that the
// sandboxer serves on the sandbox's task socket; the engine (and so the
// compiled-module cache), the event publisher and the containerd connection
// used to read wasm layers are shared by every sandbox of a Backend.
package wasmbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/wasmtask"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// Name is the sandbox kind this backend runs.
const Name = "wasm"

// stateFileName is the file, in a sandbox's StateDir, where its task
// service records the tasks it created (for cleanup after a restart). It
// holds the JSON list in two checksummed slots (wasmtask.LoadRecords reads
// it); the name stays from when it held the bare list, which still reads.
const stateFileName = "wasm-tasks.json"

// Option configures New.
type Option func(*Backend)

// WithEngine sets the engine every sandbox's modules run on. Without it New
// creates a wazero engine (with WithCacheDir's directory, if set) and closes
// it in Close.
func WithEngine(e wasm.Engine) Option { return func(b *Backend) { b.engine = e } }

// WithCacheDir sets the on-disk compiled-module cache of the wazero engine
// New creates when WithEngine is not given.
func WithCacheDir(dir string) Option { return func(b *Backend) { b.cacheDir = dir } }

// WithPublisher sets where task events go (containerd's event service, see
// task/events.NewRemotePublisher). Without it events are dropped, and
// containerd only learns of exits through Wait.
func WithPublisher(p events.Publisher) Option { return func(b *Backend) { b.publisher = p } }

// WithModuleResolver lets tasks whose module is not a file of their rootfs
// take it from r: in kuasar-sandboxer the wasm layers of their image in
// containerd's content store (task/wasmtask/contentstore), in `kuasar run`
// the module it read. The caller keeps and closes r.
func WithModuleResolver(r wasmtask.ModuleResolver) Option { return func(b *Backend) { b.resolver = r } }

// WithDefaultMemoryLimit caps the linear memory of containers whose spec and
// pod set no memory limit ([wasm] default_memory_limit).
func WithDefaultMemoryLimit(bytes uint64) Option {
	return func(b *Backend) { b.defaultMemory = bytes }
}

// WithDefaultOpenFileLimit caps the open files of containers whose spec has
// no RLIMIT_NOFILE ([wasm] default_open_file_limit).
func WithDefaultOpenFileLimit(n int) Option {
	return func(b *Backend) { b.defaultOpenFiles = n }
}

// WithOpenFileBudget bounds the files all guests of the wazero engine New
// creates hold open together (ENFILE past it); see wazero.WithOpenFileBudget.
// It has no effect with WithEngine.
func WithOpenFileBudget(n int) Option { return func(b *Backend) { b.fileBudget = n } }

// WithPid sets the pid every Wasm task reports (default: this process's).
func WithPid(pid uint32) Option { return func(b *Backend) { b.pid = pid } }

// Backend runs Wasm sandboxes in-process. It implements backend.Backend.
type Backend struct {
	engine    wasm.Engine
	ownEngine bool
	cacheDir  string
	publisher events.Publisher
	resolver  wasmtask.ModuleResolver
	pid       uint32

	defaultMemory    uint64
	defaultOpenFiles int
	fileBudget       int

	// defaultEngine and engines: see engines.go.
	defaultEngine string
	enginesMu     sync.Mutex
	engines       map[string]wasm.Engine
	// modules holds, per engine name, the modules compiled from module
	// files, shared by every sandbox on that engine.
	modules map[string]*wasmtask.ModuleCache
}

var _ backend.Backend = (*Backend)(nil)

// New returns a Backend.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	b := &Backend{pid: uint32(os.Getpid())}
	for _, o := range opts {
		o(b)
	}
	if b.engine == nil {
		eopts := []wazero.Option{wazero.WithOpenFileBudget(b.fileBudget)}
		if b.cacheDir != "" {
			eopts = append(eopts, wazero.WithCacheDir(b.cacheDir))
		}
		e, err := wazero.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("create wazero engine: %w", err)
		}
		b.engine, b.ownEngine = e, true
	}
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return Name }

// Close releases the engine when New created it, and the engines sandboxes
// asked for by name (engines.go). Sandboxes must have been shut down first.
func (b *Backend) Close(ctx context.Context) error {
	errs := b.closeEngines(ctx)
	if b.ownEngine {
		errs = append(errs, b.engine.Close(ctx))
	}
	return errors.Join(errs...)
}

func (b *Backend) service(ctx context.Context, sb backend.Sandbox) (*wasmtask.Service, error) {
	name := sb.WasmEngine
	if name == "" {
		name = sb.Annotations[AnnotationEngine]
	}
	engine, err := b.engineFor(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("wasm sandbox %s: %w", sb.ID, err)
	}
	opts := []wasmtask.Option{
		wasmtask.WithEngine(engine),
		wasmtask.WithModuleCache(b.moduleCache(engine.Name())),
		wasmtask.WithPublisher(b.publisher),
		wasmtask.WithSandbox(sb.ID, sb.Namespace),
		wasmtask.WithPid(b.pid),
		wasmtask.WithMemoryLimit(sb.Resources.MemoryLimitBytes),
		wasmtask.WithDefaultMemoryLimit(b.defaultMemory),
		wasmtask.WithDefaultOpenFileLimit(b.defaultOpenFiles),
	}
	if b.resolver != nil {
		opts = append(opts, wasmtask.WithModuleResolver(b.resolver))
	}
	if sb.StateDir != "" {
		opts = append(opts, wasmtask.WithStateFile(filepath.Join(sb.StateDir, stateFileName)))
	}
	return wasmtask.New(ctx, opts...)
}

// checkpoint is what Instance.Checkpoint returns: the task records live in
// the sandbox's StateDir, rewritten on every task create and delete, so the
// checkpoint itself stays small and constant.
type checkpoint struct {
	Kind      string `json:"kind"`
	StateFile string `json:"state_file,omitempty"`
}

// Start implements backend.Backend: it creates the sandbox's task service.
// Nothing runs until containerd creates containers in it.
func (b *Backend) Start(ctx context.Context, sb backend.Sandbox) (backend.Instance, error) {
	if sb.ID == "" {
		return nil, fmt.Errorf("wasm sandbox: no sandbox id: %w", errdefs.ErrInvalidArgument)
	}
	svc, err := b.service(ctx, sb)
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithField("sandbox", sb.ID).Info("wasm sandbox started")
	return newInstance(sb, svc, b.pid), nil
}

// Recover implements backend.Backend. An in-process sandbox died with the
// process that ran it: the returned Instance reports exit status 137, and
// so do the tasks it had (read from the state file), so that containerd
// sees them exited and can delete them; Shutdown unmounts their rootfs.
func (b *Backend) Recover(ctx context.Context, sb backend.Sandbox, cp []byte) (backend.Instance, error) {
	var c checkpoint
	if len(cp) > 0 {
		if err := json.Unmarshal(cp, &c); err != nil {
			return nil, fmt.Errorf("wasm sandbox %s: unreadable checkpoint: %w: %w", sb.ID, err, errdefs.ErrInvalidArgument)
		}
	}
	stateFile := c.StateFile
	if stateFile == "" && sb.StateDir != "" {
		stateFile = filepath.Join(sb.StateDir, stateFileName)
	}
	var recs []wasmtask.TaskRecord
	if stateFile != "" {
		var err error
		if recs, err = wasmtask.LoadRecords(stateFile); err != nil {
			log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Warn("wasm sandbox: task records lost; their rootfs mounts stay")
		}
	}
	svc, err := b.service(ctx, sb)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	svc.Restore(recs, wasm.ExitKilled, now)
	inst := newInstance(sb, svc, b.pid)
	inst.exit(backend.Exit{Status: wasm.ExitKilled, ExitedAt: now})
	log.G(ctx).WithField("sandbox", sb.ID).WithField("tasks", len(recs)).Warn("wasm sandbox did not survive the sandboxer restart: reported exited 137")
	return inst, nil
}

// Instance is one Wasm sandbox. It implements backend.Instance.
type Instance struct {
	sb  backend.Sandbox
	svc *wasmtask.Service
	pid uint32

	mu       sync.Mutex
	exited   chan struct{}
	exitInfo backend.Exit
	shutdown bool
	// exitCtx is done once exited is closed (backend.ExitNotifier).
	exitCtx    context.Context
	exitCancel context.CancelFunc
}

var (
	_ backend.Instance     = (*Instance)(nil)
	_ backend.ExitNotifier = (*Instance)(nil)
)

func newInstance(sb backend.Sandbox, svc *wasmtask.Service, pid uint32) *Instance {
	ctx, cancel := context.WithCancel(context.Background())
	return &Instance{sb: sb, svc: svc, pid: pid, exited: make(chan struct{}), exitCtx: ctx, exitCancel: cancel}
}

// ExitContext implements backend.ExitNotifier.
func (i *Instance) ExitContext() context.Context { return i.exitCtx }

// exit records the sandbox's end once.
func (i *Instance) exit(e backend.Exit) {
	i.mu.Lock()
	defer i.mu.Unlock()
	select {
	case <-i.exited:
	default:
		i.exitInfo = e
		close(i.exited)
		i.exitCancel()
	}
}

// Tasks implements backend.Instance.
func (i *Instance) Tasks() taskAPI.TTRPCTaskService { return i.svc }

// Service is Tasks with its concrete type, for callers that need the
// service's own methods (usage figures, records).
func (i *Instance) Service() *wasmtask.Service { return i.svc }

// Pid implements backend.Instance: the process hosting the sandbox.
func (i *Instance) Pid() uint32 { return i.pid }

// Checkpoint implements backend.Instance.
func (i *Instance) Checkpoint() []byte {
	c := checkpoint{Kind: Name}
	if i.sb.StateDir != "" {
		c.StateFile = filepath.Join(i.sb.StateDir, stateFileName)
	}
	b, _ := json.Marshal(c)
	return b
}

// Stop implements backend.Instance: SIGTERM to every task, SIGKILL to
// those still running after timeout; then the sandbox has exited (status 0:
// it was stopped as asked).
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) error {
	if err := i.svc.Stop(ctx, syscall.SIGTERM, timeout); err != nil {
		return fmt.Errorf("stop wasm sandbox %s: %w", i.sb.ID, err)
	}
	i.exit(backend.Exit{Status: 0, ExitedAt: time.Now()})
	return nil
}

// Wait implements backend.Instance.
func (i *Instance) Wait(ctx context.Context) (backend.Exit, error) {
	select {
	case <-i.exited:
		// An exit already reported wins over a done ctx.
		ctx = context.Background()
	default:
	}
	select {
	case <-i.exited:
		i.mu.Lock()
		defer i.mu.Unlock()
		return i.exitInfo, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}

// Metrics implements backend.Instance. MemoryBytes is the linear memory of
// the live instances (what the guests can use; the engine's own per-instance
// overhead and compiled code are shared process memory and not counted).
// CPUNanos is the CPU time of the threads that ran the guests, read from
// each thread's CPU clock (guests are pinned to their thread while they run);
// tasks deleted since no longer count. A thread's CPU clock has no
// user/kernel split, so UserNanos and SystemNanos stay zero (unknown).
func (i *Instance) Metrics(ctx context.Context) (backend.Metrics, error) {
	u := i.svc.Usage()
	// Linear memory is anonymous memory of this process, all of it.
	return backend.Metrics{MemoryBytes: u.MemoryBytes, AnonBytes: u.MemoryBytes, CPUNanos: u.CPUNanos, Tasks: u.Tasks}, nil
}

// Update implements backend.Instance: a new memory limit applies to
// instances started afterwards; running ones keep theirs (a Wasm linear
// memory's bound is fixed at instantiation). CPU limits cannot be applied to
// goroutines and are refused.
func (i *Instance) Update(ctx context.Context, r backend.Resources) error {
	if r.CPUQuota > 0 {
		return fmt.Errorf("wasm sandbox %s: CPU limits cannot be applied to in-process Wasm sandboxes (they share the sandboxer's CPU): %w", i.sb.ID, errdefs.ErrNotImplemented)
	}
	i.svc.SetMemoryLimit(r.MemoryLimitBytes)
	return nil
}

// Shutdown implements backend.Instance: it kills whatever still runs,
// unmounts every rootfs the sandbox's tasks mounted (also those of tasks
// recovered after a restart) and removes the task records.
func (i *Instance) Shutdown(ctx context.Context) error {
	i.mu.Lock()
	done := i.shutdown
	i.mu.Unlock()
	if done {
		return nil
	}
	if err := i.svc.Close(ctx); err != nil {
		return fmt.Errorf("shut down wasm sandbox %s: %w", i.sb.ID, err)
	}
	if i.sb.StateDir != "" {
		if err := os.Remove(filepath.Join(i.sb.StateDir, stateFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	i.exit(backend.Exit{Status: wasm.ExitKilled, ExitedAt: time.Now()})
	i.mu.Lock()
	i.shutdown = true
	i.mu.Unlock()
	log.G(ctx).WithField("sandbox", i.sb.ID).Info("wasm sandbox shut down")
	return nil
}
