// Package wasmtask implements containerd's Task API v3 for WebAssembly
// containers run in-process on a wasm.Engine: each container (and each exec)
// is an instance of its module running on a goroutine of the hosting
// process, with its stdio on the FIFOs containerd gives and its rootfs
// mounted under the bundle.
//
// One Service serves the containers of one sandbox; the sandboxer forwards
// that sandbox's Task API socket to it. See docs/task.md.
package wasmtask

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/internal/bundle"
	"github.com/kuasar-go/kuasar/internal/version"
	"github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/stdio"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/runspec"
)

// container is one task: its init process, its execs and its rootfs.
type container struct {
	id        string
	ns        string
	bundle    string
	rootfs    string        // <bundle>/rootfs
	mounts    []mount.Mount // mounted on rootfs by Create; nil when none
	mounted   bool
	spec      *specs.Spec
	module    string // guest path of the init module ("" when from the content store)
	memLimit  uint64
	init      *process
	execs     map[string]*process
	recovered bool

	mountMu sync.Mutex // serialises unmount (Delete vs Close)
}

// Service is a Task API v3 service for the Wasm containers of one sandbox.
// It is safe for concurrent use.
type Service struct {
	cfg      config
	events   *events.Queue
	memLimit atomic.Uint64      // sandbox-wide cap, see WithMemoryLimit
	budget   *wasm.MemoryBudget // the sum of the instances' memories, same limit

	mu    sync.Mutex
	tasks map[string]*container
	// mounting are tasks whose rootfs Create mounted before they were
	// registered; they are in the records so a crash cannot lose a mount.
	mounting map[string]TaskRecord
	// changed is closed and replaced whenever a task is added or removed,
	// or a process exits, for waitIdle.
	changed chan struct{}
	closed  bool

	// stateMu serialises saveState; stateSum is the FNV-1a hash of what
	// it last wrote (valid when stateSaved); stateRec writes the file.
	stateMu    sync.Mutex
	stateSum   uint64
	stateSaved bool
	stateRec   recordFile
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// New returns a Service; WithEngine is required.
func New(ctx context.Context, opts ...Option) (*Service, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.engine == nil {
		return nil, fmt.Errorf("wasmtask.New: no engine: pass wasmtask.WithEngine: %w", errdefs.ErrInvalidArgument)
	}
	s := &Service{
		cfg:      cfg,
		events:   events.NewQueue(cfg.publisher),
		tasks:    map[string]*container{},
		mounting: map[string]TaskRecord{},
		changed:  make(chan struct{}),
	}
	// No state file stands for no tasks, as "[]" does (LoadRecords): a
	// service that never had a task writes none.
	s.stateSum, s.stateSaved = recordsSum([]byte("[]")), true
	if s.cfg.modules == nil {
		s.cfg.modules = NewModuleCache()
	}
	s.memLimit.Store(cfg.memoryLimit)
	s.budget = wasm.NewMemoryBudget(cfg.memoryLimit)
	return s, nil
}

// logs reports whether ctx's logger writes entries of level: the lines a
// task's Create, Start, exit and Delete log are built only then (a logrus
// entry's fields cost allocations on every task even when the line is
// dropped: an eighth of the sandboxer's allocations per task at level warn).
func logs(ctx context.Context, level log.Level) bool {
	return log.G(ctx).Logger.IsLevelEnabled(level)
}

func (s *Service) logger(ctx context.Context, id string) *log.Entry {
	return log.G(ctx).WithField("sandbox", s.cfg.sandboxID).WithField("container", id)
}

// namespace is the request's containerd namespace (ttrpc metadata), or the
// sandbox's when the request carries none.
func (s *Service) namespace(ctx context.Context) (string, error) {
	if ns, err := namespaces.NamespaceRequired(ctx); err == nil {
		return ns, nil
	}
	if s.cfg.namespace != "" {
		return s.cfg.namespace, nil
	}
	return "", fmt.Errorf("request carries no containerd namespace: %w", errdefs.ErrFailedPrecondition)
}

func (s *Service) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.tasks[id]
	if !ok || c == nil { // nil: a Create in progress
		return nil, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *Service) getProcess(id, execID string) (*container, *process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok || p == nil { // nil: an Exec in progress
		return nil, nil, fmt.Errorf("exec %q of task %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// Create reads the bundle's config.json, mounts the rootfs, finds and
// compiles the module, opens the stdio FIFOs and registers the task.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	c, err := s.create(ctx, r)
	if err != nil {
		s.logger(ctx, r.ID).WithError(err).Warn("create wasm task")
		return nil, errgrpc.ToGRPC(err)
	}
	s.events.Publish(c.ns, runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         s.cfg.pid,
	})
	if logs(ctx, log.InfoLevel) {
		s.logger(ctx, r.ID).WithField("module", c.init.module.Digest()).Info("wasm task created")
	}
	return &taskAPI.CreateTaskResponse{Pid: s.cfg.pid}, nil
}

func (s *Service) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *container, retErr error) {
	ns, err := s.namespace(ctx)
	if err != nil {
		return nil, err
	}
	if r.ID == "" || r.Bundle == "" {
		return nil, fmt.Errorf("create: id and bundle are required: %w", errdefs.ErrInvalidArgument)
	}
	if r.Terminal {
		return nil, fmt.Errorf("task %s asks for a terminal: Wasm tasks have no pseudo terminal; create the container with tty=false: %w", r.ID, errdefs.ErrNotImplemented)
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("task %s: restoring from a checkpoint is not supported for Wasm tasks: %w", r.ID, errdefs.ErrNotImplemented)
	}
	// Reserve the id so that concurrent creates of the same id fail.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("sandbox %s is shutting down: %w", s.cfg.sandboxID, errdefs.ErrFailedPrecondition)
	}
	if _, ok := s.tasks[r.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("task %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	s.tasks[r.ID] = nil
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.tasks, r.ID)
			s.mu.Unlock()
		}
	}()

	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	c := &container{id: r.ID, ns: ns, bundle: r.Bundle, spec: spec, execs: map[string]*process{}}
	root := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		root = spec.Root.Path
	}
	if !filepath.IsAbs(root) {
		root = filepath.Join(r.Bundle, root)
	}
	c.rootfs = root
	if len(r.Rootfs) > 0 {
		// The mount point is made only when mounting on it finds no such
		// path (below): containerd creates it, so that costs no system
		// call in the common case. One this Create made is removed when
		// it fails (after the unmount: defers run last first).
		madeRoot := false
		defer func() {
			if retErr != nil && madeRoot {
				os.Remove(root)
			}
		}()
		c.mounts = mount.FromProto(r.Rootfs)
		// The task's record is written before the mount, so that a
		// crash at any point after it leaves a record naming the mount
		// (recovery unmounts it; unmounting what was never mounted is a
		// no-op). It is the task's only record write in Create: once
		// registered, the task's record is the same.
		s.mu.Lock()
		s.mounting[r.ID] = TaskRecord{ID: r.ID, Namespace: ns, Bundle: r.Bundle, Rootfs: root}
		s.mu.Unlock()
		s.saveState(ctx)
		defer func() {
			s.mu.Lock()
			delete(s.mounting, r.ID)
			s.mu.Unlock()
			if retErr != nil {
				if err := c.unmount(); err != nil {
					s.logger(ctx, r.ID).WithError(err).Error("unmount rootfs after failed create")
				}
				s.saveState(ctx)
			}
		}()
		c.mounted = true // from here on, a failed Create unmounts
		err := mount.All(c.mounts, root)
		if errors.Is(err, unix.ENOENT) {
			// No mount point (or a missing source: then the retry
			// fails the same way).
			mount.UnmountMounts(c.mounts, root, 0)
			if merr := unix.Mkdir(root, 0o711); merr == nil {
				madeRoot = true
				err = mount.All(c.mounts, root)
			} else if !errors.Is(merr, unix.EEXIST) {
				err = fmt.Errorf("%w; create the mount point: %w", err, &os.PathError{Op: "mkdir", Path: root, Err: merr})
			}
		}
		if err != nil {
			mount.UnmountMounts(c.mounts, root, 0)
			c.mounted = false
			return nil, fmt.Errorf("mount rootfs of task %s on %s: %w", r.ID, root, err)
		}
	}

	m, cfg, err := s.module(ctx, c, spec, nil)
	if err != nil {
		return nil, err
	}
	cfg.MemoryLimit = s.limit(cfg.MemoryLimit)
	c.memLimit = cfg.MemoryLimit
	s.bound(c, &cfg)
	if err := checkRunnable(m, cfg, r.ID, spec.Process.Args[0]); err != nil {
		return nil, err
	}
	io := stdio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr}
	pipes, err := stdio.Open(ctx, io)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", r.ID, err)
	}
	c.init = newProcess("", m, cfg, io, pipes)
	s.mu.Lock()
	s.tasks[r.ID] = c
	s.notifyLocked()
	s.mu.Unlock()
	if !c.mounted {
		// A task with a rootfs mount was recorded before its mount.
		s.saveState(ctx)
	}
	return c, nil
}

// module finds, reads and compiles the module of spec.Process (args[0],
// path#function) inside the container's rootfs. When the rootfs has no such
// file and a resolver is set, the module comes from the image's wasm layers
// instead (init: always; execs: the container's own module). The engine
// caches compiled modules by digest, so a module shared by many containers
// compiles once.
func (s *Service) module(ctx context.Context, c *container, spec *specs.Spec, initModule wasm.Module) (wasm.Module, wasm.RunConfig, error) {
	entry := spec.Process.Args[0]
	file, wantFn := runspec.SplitFunction(entry)
	inRoot := true
	name := file
	if !path.IsAbs(name) {
		cwd := spec.Process.Cwd
		if cwd == "" {
			cwd = "/"
		}
		name = cwd + "/" + name
	}
	spec = withoutCRIFiles(spec)
	// The mapper resolves the module in the rootfs; only when it fails (or
	// took "path#function" as one file name) is the path resolved alone,
	// to tell a module that is not in the rootfs (it may then come from
	// the image's layers) from other errors: a module found costs one
	// resolution, not two.
	var (
		modPath string
		mf      *runspec.ModuleFile
		fn      string
		cfg     wasm.RunConfig
		err     error
	)
	opened := time.Now() // before the file's identity is read: compileFile
	if s.cfg.mapper == nil {
		// runspec's mapping, with the module opened by the lookup that
		// finds it (one lookup, not three).
		mf, fn, cfg, err = runspec.FromSpecOpen(spec, c.rootfs)
		if mf != nil {
			defer mf.Close()
		}
	} else {
		modPath, fn, cfg, err = s.cfg.mapper(spec, c.rootfs)
	}
	if file != "" && (err != nil || (wantFn != "" && fn == "")) {
		if _, rerr := runspec.ResolveInRoot(c.rootfs, name); errdefs.IsNotFound(rerr) {
			if s.cfg.resolver == nil && initModule == nil {
				return nil, wasm.RunConfig{}, fmt.Errorf("task %s: Wasm module %q (process.args[0]) is not in the container's rootfs (%w): set the image entrypoint (or the container command) to the path of a .wasm file in the image: %w", c.id, entry, rerr, errdefs.ErrNotFound)
			}
			inRoot = false
		}
	}
	if inRoot {
		if err != nil {
			return nil, cfg, fmt.Errorf("task %s: %w", c.id, err)
		}
		cfg.Function = fn
		if mf == nil {
			if mf, err = runspec.OpenModule(c.rootfs, modPath); err != nil {
				return nil, cfg, fmt.Errorf("task %s: %q (process.args[0]): read Wasm module: %w", c.id, entry, err)
			}
			defer mf.Close()
		}
		m, err := s.compileFile(ctx, mf, opened)
		if err != nil {
			return nil, cfg, fmt.Errorf("task %s: %q (process.args[0]): %w", c.id, entry, err)
		}
		if initModule == nil {
			c.module = path.Clean(name)
		}
		return m, cfg, nil
	}

	// Not in the rootfs: the module lives in the image's wasm layers.
	if s.cfg.mapper == nil {
		_, fn, cfg, err = runspec.FromSpec(spec, "")
	} else {
		_, fn, cfg, err = s.cfg.mapper(spec, "")
	}
	if err != nil {
		return nil, cfg, fmt.Errorf("task %s: %w", c.id, err)
	}
	cfg.Function = fn
	if spec.Root != nil {
		// A spec without root (`kuasar run` of a bare module) gives the
		// guest no "/" at all, as a module run without a filesystem has.
		cfg.Mounts = append([]wasm.Mount{{HostPath: c.rootfs, GuestPath: "/", ReadOnly: spec.Root.Readonly}}, cfg.Mounts...)
	}
	if initModule != nil {
		if c.module != "" {
			return nil, cfg, fmt.Errorf("task %s: Wasm module %q does not exist in the container's rootfs: give the path of a .wasm file in the image: %w", c.id, entry, errdefs.ErrNotFound)
		}
		initFile, _ := runspec.SplitFunction(c.spec.Process.Args[0])
		if file != imageModule && path.Clean(file) != path.Clean(initFile) {
			return nil, cfg, fmt.Errorf("task %s: %q is not in the container's rootfs, and the container's own module (from its image's wasm layer) is %q: exec %q (or \"#function\") to run it: %w", c.id, entry, initFile, initFile, errdefs.ErrNotFound)
		}
		return initModule, cfg, nil
	}
	b, rfn, err := s.cfg.resolver.ResolveModule(ctx, c.ns, c.id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, cfg, fmt.Errorf("task %s: no Wasm module: %q (process.args[0]) is not in the rootfs and the image has no wasm layer (%w): set the entrypoint to the module's path in the image, or build the image with an application/wasm layer: %w", c.id, entry, err, errdefs.ErrNotFound)
		}
		return nil, cfg, fmt.Errorf("task %s: read the image's wasm layer from containerd: %w", c.id, err)
	}
	if cfg.Function == "" {
		cfg.Function = rfn
	}
	m, err := s.cfg.engine.Compile(ctx, b)
	if err != nil {
		return nil, cfg, fmt.Errorf("task %s: the wasm layer of the container's image is not a usable WebAssembly module: %w", c.id, err)
	}
	return m, cfg, nil
}

// stableAfter is how long after its last change a module file's FileID may
// key the module cache (runspec.FileID.ChangedBefore): well above the coarse
// clock tick the kernel stamps file times with (4 ms at HZ=250) and small
// clock steps.
var stableAfter = time.Second

// compileFile returns the module compiled from the module file f, opened
// inside the container's rootfs at or after now. A file whose identity
// (runspec.FileID) the cache knows, and that had not changed for stableAfter
// when it was cached, is neither read nor hashed again: the module compiled
// from it before is returned.
func (s *Service) compileFile(ctx context.Context, f *runspec.ModuleFile, now time.Time) (wasm.Module, error) {
	id := f.ID()
	stable := id.ChangedBefore(now.Add(-stableAfter))
	if stable {
		if m := s.cfg.modules.get(id); m != nil {
			return m, nil
		}
	}
	b, err := f.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("read Wasm module: %w", err)
	}
	m, err := s.cfg.engine.Compile(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("not a usable WebAssembly module (use a Wasm image, or run Linux images with vm isolation): %w", err)
	}
	if stable {
		s.cfg.modules.put(id, m)
	}
	return m, nil
}

// imageModule stands for "the container's own module" in an exec of
// "#function" when that module came from the image's layers, not a file.
const imageModule = "/.kuasar-image-module"

// criFiles are the destinations CRI binds pod files onto. They are files
// (or /dev/shm) that a WASI guest cannot use, and their sources may not
// exist for pods of an external sandboxer: they are never preopened.
var criFiles = map[string]bool{
	"/etc/hosts": true, "/etc/hostname": true, "/etc/resolv.conf": true,
	"/dev/shm": true, "/dev/termination-log": true,
}

// withoutCRIFiles returns spec without the CRI pod-file mounts.
func withoutCRIFiles(spec *specs.Spec) *specs.Spec {
	var keep []specs.Mount
	for _, m := range spec.Mounts {
		if !criFiles[path.Clean(m.Destination)] {
			keep = append(keep, m)
		}
	}
	if len(keep) == len(spec.Mounts) {
		return spec
	}
	out := *spec
	out.Mounts = keep
	return &out
}

// checkRunnable refuses at create time what Run would refuse at start: a
// function the module does not export, a memory minimum over the limit.
func checkRunnable(m wasm.Module, cfg wasm.RunConfig, id, entry string) error {
	fn := cfg.Function
	if fn == "" {
		fn = wasm.DefaultFunction
	}
	found := false
	for _, e := range m.Exports() {
		if e == fn {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("task %s: module %q exports no function %q (exports: %v): name one of them after '#' in the entrypoint: %w", id, entry, fn, m.Exports(), errdefs.ErrNotFound)
	}
	if cfg.MemoryLimit > 0 && m.MinMemoryBytes() > cfg.MemoryLimit {
		return fmt.Errorf("task %s: module %q needs %d bytes of memory to start but the memory limit is %d bytes: raise the container's or the pod's memory limit: %w", id, entry, m.MinMemoryBytes(), cfg.MemoryLimit, errdefs.ErrResourceExhausted)
	}
	return nil
}

// limit applies the sandbox's memory cap to a container's limit, and the
// default when neither sets one.
func (s *Service) limit(l uint64) uint64 {
	if max := s.memLimit.Load(); max > 0 && (l == 0 || l > max) {
		return max
	}
	if l == 0 {
		return s.cfg.defaultMemoryLimit
	}
	return l
}

// bound gives an instance of c the sandbox's shared memory budget, the
// default open-file limit when its spec sets none, and an OOM report the
// first time one of its memory grows is refused: the guest sees -1 from
// memory.grow (malloc fails) and goes on, and containerd's CRI marks the
// container OOMKilled when it exits.
func (s *Service) bound(c *container, cfg *wasm.RunConfig) {
	cfg.MemoryBudget = s.budget
	if cfg.OpenFileLimit == 0 {
		cfg.OpenFileLimit = s.cfg.defaultOpenFiles
	}
	var reported atomic.Bool
	cfg.MemoryRefused = func(size uint64) {
		if reported.Swap(true) {
			return
		}
		s.logger(context.Background(), c.id).WithField("size", size).
			WithField("limit", cfg.MemoryLimit).WithField("sandbox_limit", s.budget.Limit()).
			Warn("wasm memory grow refused: out of memory")
		s.events.Publish(c.ns, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: c.id})
	}
}

// readSpec reads the bundle's spec (internal/bundle) and checks what a Wasm
// task needs of it.
func readSpec(dir string) (*specs.Spec, error) {
	spec, err := bundle.ReadSpec(dir)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, bundle.ConfigFile)
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("%s has no process.args: set the image entrypoint (or the container command) to the Wasm module path, e.g. /app.wasm: %w", p, errdefs.ErrInvalidArgument)
	}
	if spec.Process.Terminal {
		return nil, fmt.Errorf("%s asks for a terminal (process.terminal): Wasm tasks have no pseudo terminal; create the container with tty=false: %w", p, errdefs.ErrNotImplemented)
	}
	return spec, nil
}

func (c *container) unmount() error {
	c.mountMu.Lock()
	defer c.mountMu.Unlock()
	if !c.mounted {
		return nil
	}
	if err := unmountAll(c.rootfs, c.stacked()); err != nil {
		return fmt.Errorf("unmount rootfs %s: %w", c.rootfs, err)
	}
	c.mounted = false
	return nil
}

// stacked is how many mounts Create stacked on the rootfs directory (those
// without a Target subdirectory; a lazy unmount of the top one detaches
// the ones below it in subdirectories with it), or 0 when not known (a task
// restored after a restart).
func (c *container) stacked() int {
	if c.recovered {
		return 0
	}
	n := 0
	for _, m := range c.mounts {
		if m.Target == "" || m.Target == "/" || m.Target == "." {
			n++
		}
	}
	return n
}

// unmountAll detaches the n mounts stacked on target, or, when n is 0,
// every mount stacked on it until none is left (EINVAL: not a mount point;
// ENOENT: no such path). It is containerd's mount.UnmountAll without the
// stat of target and the statfs before each unmount (a check for FUSE that
// only matters to unprivileged callers), and, when the count is known,
// without the last unmount that only finds nothing left: four system calls
// less on every task delete.
func unmountAll(target string, n int) error {
	done := 0
	for range 1000 {
		if n > 0 && done == n {
			return nil
		}
		err := unix.Unmount(target, unix.MNT_DETACH)
		switch {
		case err == nil:
			done++
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return err
		}
	}
	return fmt.Errorf("still mounted after 1000 unmounts: %w", unix.EBUSY)
}

// Start runs the task's (or exec's) module on a goroutine.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// Published once the start is certain and before the instance runs,
	// so that /tasks/start always precedes the matching /tasks/exit in the
	// ordered queue.
	onStart := func() {
		if r.ExecID == "" {
			s.events.Publish(c.ns, runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: s.cfg.pid})
		} else {
			s.events.Publish(c.ns, runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: r.ExecID, Pid: s.cfg.pid})
		}
	}
	if err := p.start(onStart, func(p *process) { s.exited(c, p) }); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("start task %s exec %q: %w", r.ID, r.ExecID, err))
	}
	if logs(ctx, log.DebugLevel) {
		s.logger(ctx, r.ID).WithField("exec", r.ExecID).Debug("wasm task started")
	}
	return &taskAPI.StartResponse{Pid: s.cfg.pid}, nil
}

// exited publishes a process's exit (and OOM) once it ended, after its
// exit hooks (OnExit) ran.
func (s *Service) exited(c *container, p *process) {
	p.exitHooks.Run()
	_, status, at := p.state()
	if p.runErr != nil && errors.Is(p.runErr, wasm.ErrOutOfMemory) {
		s.events.Publish(c.ns, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: c.id})
	}
	if ctx := context.Background(); logs(ctx, log.InfoLevel) {
		ctx = namespaces.WithNamespace(ctx, c.ns)
		l := s.logger(ctx, c.id).WithField("exec", p.execID).WithField("exit", status)
		if p.runErr != nil {
			l = l.WithError(p.runErr)
		}
		l.Info("wasm task exited")
	}
	id := p.execID
	if id == "" {
		id = c.id
	}
	s.events.Publish(c.ns, runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: c.id, ID: id, Pid: s.cfg.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
	s.mu.Lock()
	s.notifyLocked()
	s.mu.Unlock()
}

// Delete removes an exited task (or exec): it unmounts the rootfs and
// returns the exit status. A created task that never ran is deleted as if
// killed. A running one is refused.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, _, _ := p.state()
	switch st {
	case task.Status_RUNNING:
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %s exec %q is running: kill it before deleting it: %w", r.ID, r.ExecID, errdefs.ErrFailedPrecondition))
	case task.Status_CREATED:
		p.kill(syscall.SIGKILL, func(*process) {})
	}
	_, status, at := p.state()
	if r.ExecID != "" {
		s.mu.Lock()
		delete(c.execs, r.ExecID)
		s.notifyLocked()
		s.mu.Unlock()
		return &taskAPI.DeleteResponse{Pid: s.cfg.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
	}
	// Claim the deletion so that a concurrent Delete gets NotFound.
	s.mu.Lock()
	if s.tasks[r.ID] != c {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %q: %w", r.ID, errdefs.ErrNotFound))
	}
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	// The init is gone: stop what still runs in the container.
	s.mu.Lock()
	execs := make([]*process, 0, len(c.execs))
	for _, e := range c.execs {
		if e != nil {
			execs = append(execs, e)
		}
	}
	s.mu.Unlock()
	for _, e := range execs {
		e.kill(syscall.SIGKILL, func(ep *process) { s.exited(c, ep) })
		<-e.done
	}
	if err := c.unmount(); err != nil {
		s.mu.Lock()
		s.tasks[r.ID] = c // still there: a retry can unmount it
		s.mu.Unlock()
		return nil, errgrpc.ToGRPC(fmt.Errorf("delete task %s: %w", r.ID, err))
	}
	s.mu.Lock()
	s.notifyLocked()
	s.mu.Unlock()
	s.saveState(ctx)
	s.events.Publish(c.ns, runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: c.id, Pid: s.cfg.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
	if logs(ctx, log.InfoLevel) {
		s.logger(ctx, r.ID).Info("wasm task deleted")
	}
	return &taskAPI.DeleteResponse{Pid: s.cfg.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// State reports a task's or exec's status.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, status, at := p.state()
	resp := &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Pid: s.cfg.pid, Status: st,
		Stdin: p.io.Stdin, Stdout: p.io.Stdout, Stderr: p.io.Stderr,
		ExitStatus: status,
	}
	if st == task.Status_STOPPED {
		resp.ExitedAt = protobuf.ToTimestamp(at)
	}
	return resp, nil
}

// OnExit runs f once task id's init process has exited, before its
// /tasks/exit event is published, on the goroutine that publishes it (f
// must not block for long; Wait returns at once inside it). What f records
// (the sandboxer's exit record in the bundle) is then on disk before
// containerd hears of the exit, so a crash in between cannot make the
// same task report another status afterwards. No goroutine waits per task.
// When the process has already exited, f runs at once.
func (s *Service) OnExit(id string, f func()) error {
	_, p, err := s.getProcess(id, "")
	if err != nil {
		return err
	}
	p.exitHooks.Add(f)
	return nil
}

// Wait blocks until the task (or exec) exits or ctx is done.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, errgrpc.ToGRPC(ctx.Err())
	}
	_, status, at := p.state()
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// signalAction says what a signal does to a Wasm guest, which cannot
// install handlers: the default Linux action.
func signalAction(sig syscall.Signal) (stop bool, err error) {
	switch sig {
	case 0, syscall.SIGCHLD, syscall.SIGURG, syscall.SIGWINCH, syscall.SIGCONT:
		return false, nil // ignored by default
	case syscall.SIGSTOP, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		return false, fmt.Errorf("signal %d would pause the task: Wasm tasks cannot be paused: %w", sig, errdefs.ErrNotImplemented)
	}
	if sig < 1 || sig > 64 {
		return false, fmt.Errorf("signal %d is not a valid signal number: %w", sig, errdefs.ErrInvalidArgument)
	}
	return true, nil // SIGKILL, SIGTERM, SIGINT, SIGHUP, ...: terminate
}

// Kill stops the task (or exec, or with All the task and its execs). Every
// terminating signal stops the instance; its exit status is 128+signal.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	sig := syscall.Signal(r.Signal)
	stop, err := signalAction(sig)
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("kill task %s: %w", r.ID, err))
	}
	if !stop {
		if p.exited() && sig == 0 {
			return nil, errgrpc.ToGRPC(fmt.Errorf("task %s exec %q: process already finished: %w", r.ID, r.ExecID, errdefs.ErrNotFound))
		}
		return &emptypb.Empty{}, nil
	}
	onExit := func(ep *process) { s.exited(c, ep) }
	if r.All && r.ExecID == "" {
		s.mu.Lock()
		execs := make([]*process, 0, len(c.execs))
		for _, e := range c.execs {
			if e != nil {
				execs = append(execs, e)
			}
		}
		s.mu.Unlock()
		for _, e := range execs {
			e.kill(sig, onExit)
		}
	}
	if err := p.kill(sig, onExit); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("kill task %s exec %q: %w", r.ID, r.ExecID, err))
	}
	if logs(ctx, log.DebugLevel) {
		s.logger(ctx, r.ID).WithField("exec", r.ExecID).WithField("signal", r.Signal).Debug("wasm task killed")
	}
	return &emptypb.Empty{}, nil
}

// Exec adds a process to a running container: another module (or another
// function of the container's module) from the exec's process spec, run
// against the same rootfs.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := s.exec(ctx, r); err != nil {
		s.logger(ctx, r.ID).WithField("exec", r.ExecID).WithError(err).Warn("exec in wasm task")
		return nil, errgrpc.ToGRPC(err)
	}
	c, _ := s.get(r.ID)
	s.events.Publish(c.ns, runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

func (s *Service) exec(ctx context.Context, r *taskAPI.ExecProcessRequest) error {
	c, err := s.get(r.ID)
	if err != nil {
		return err
	}
	if r.ExecID == "" {
		return fmt.Errorf("exec in task %s: exec id is required: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	if r.Terminal {
		return fmt.Errorf("exec %s in task %s asks for a terminal: Wasm tasks have no pseudo terminal; exec without -t: %w", r.ExecID, r.ID, errdefs.ErrNotImplemented)
	}
	if c.init.exited() {
		return fmt.Errorf("exec %s in task %s: the task has exited: %w", r.ExecID, r.ID, errdefs.ErrFailedPrecondition)
	}
	if r.Spec == nil {
		return fmt.Errorf("exec %s in task %s: no process spec: %w", r.ExecID, r.ID, errdefs.ErrInvalidArgument)
	}
	var proc specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &proc); err != nil {
		return fmt.Errorf("exec %s in task %s: parse process spec: %w: %w", r.ExecID, r.ID, err, errdefs.ErrInvalidArgument)
	}
	if len(proc.Args) == 0 || proc.Args[0] == "" {
		return fmt.Errorf("exec %s in task %s: no command: give the path of a .wasm file in the container (path#function for another function): %w", r.ExecID, r.ID, errdefs.ErrInvalidArgument)
	}
	if proc.Terminal {
		return fmt.Errorf("exec %s in task %s asks for a terminal: Wasm tasks have no pseudo terminal; exec without -t: %w", r.ExecID, r.ID, errdefs.ErrNotImplemented)
	}
	s.mu.Lock()
	if _, ok := c.execs[r.ExecID]; ok {
		s.mu.Unlock()
		return fmt.Errorf("exec %s in task %s: %w", r.ExecID, r.ID, errdefs.ErrAlreadyExists)
	}
	c.execs[r.ExecID] = nil
	s.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			s.mu.Lock()
			delete(c.execs, r.ExecID)
			s.mu.Unlock()
		}
	}()

	spec := *c.spec
	spec.Process = &proc
	if file, _ := runspec.SplitFunction(proc.Args[0]); file == "" {
		// "#function": another function of the container's own module.
		if c.module != "" {
			proc.Args[0] = c.module + proc.Args[0]
		} else {
			proc.Args[0] = imageModule + proc.Args[0]
		}
	}
	m, cfg, err := s.module(ctx, c, &spec, c.init.module)
	if err != nil {
		return fmt.Errorf("exec %s: %w", r.ExecID, err)
	}
	if cfg.MemoryLimit == 0 {
		s.mu.Lock()
		cfg.MemoryLimit = c.memLimit
		s.mu.Unlock()
	}
	cfg.MemoryLimit = s.limit(cfg.MemoryLimit)
	s.bound(c, &cfg)
	if err := checkRunnable(m, cfg, r.ID, proc.Args[0]); err != nil {
		return err
	}
	io := stdio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr}
	pipes, err := stdio.Open(ctx, io)
	if err != nil {
		return fmt.Errorf("exec %s in task %s: %w", r.ExecID, r.ID, err)
	}
	s.mu.Lock()
	c.execs[r.ExecID] = newProcess(r.ExecID, m, cfg, io, pipes)
	s.notifyLocked()
	s.mu.Unlock()
	ok = true
	return nil
}

// Pids lists the task's live processes. Every Wasm instance reports the
// sandbox's pid; execs carry their exec id in Info.
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var out []*task.ProcessInfo
	if !c.init.exited() {
		out = append(out, &task.ProcessInfo{Pid: s.cfg.pid})
	}
	s.mu.Lock()
	ids := make([]string, 0, len(c.execs))
	for id, p := range c.execs {
		if p != nil && !p.exited() {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		info, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: id})
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		out = append(out, &task.ProcessInfo{Pid: s.cfg.pid, Info: info})
	}
	return &taskAPI.PidsResponse{Processes: out}, nil
}

// processes returns a container's init and execs.
func (s *Service) processes(c *container) []*process {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := []*process{c.init}
	for _, p := range c.execs {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// Stats reports the task's memory (linear memory of its live instances) and
// CPU time as cgroup v2 Metrics, the type containerd's CRI decodes.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var mem, cpu uint64
	var live uint64
	for _, p := range s.processes(c) {
		mem += p.memoryBytes()
		cpu += p.cpuNanos()
		if !p.exited() {
			live++
		}
	}
	s.mu.Lock()
	limit := c.memLimit
	s.mu.Unlock()
	a, err := typeurl.MarshalAnyToProto(metrics(mem, limit, cpu, live))
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// CloseIO closes the guest's stdin so that it reads end of file.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Stdin {
		p.pipes.CloseStdin()
	}
	return &emptypb.Empty{}, nil
}

// Connect reports the pid that hosts the tasks and the service version.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	if _, err := s.get(r.ID); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.ConnectResponse{ShimPid: s.cfg.pid, TaskPid: s.cfg.pid, Version: version.Version}, nil
}

// Shutdown is what containerd sends after every task delete. The service is
// shared by the sandbox's containers and lives as long as the sandbox, so it
// never stops anything here; the sandbox's Stop/Shutdown end it.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	s.logger(ctx, r.ID).WithField("tasks", n).Debug("task shutdown request ignored: the sandbox owns the service")
	return &emptypb.Empty{}, nil
}

// ResizePty fails: Wasm tasks have no terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: Wasm tasks have no pseudo terminal to resize: %w", r.ID, errdefs.ErrNotImplemented))
}

// Pause fails: a Wasm instance cannot be frozen.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: pausing Wasm tasks is not supported: %w", r.ID, errdefs.ErrNotImplemented))
}

// Resume fails: a Wasm instance is never paused.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: resuming Wasm tasks is not supported (they cannot be paused): %w", r.ID, errdefs.ErrNotImplemented))
}

// Checkpoint fails: Wasm instance state cannot be saved.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: checkpointing Wasm tasks is not supported: %w", r.ID, errdefs.ErrNotImplemented))
}

// Update applies a new memory limit to the task's future execs. A running
// instance keeps the limit it was instantiated with: linear memory bounds
// are fixed at instantiation.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Resources == nil {
		return &emptypb.Empty{}, nil
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.GetValue(), &res); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: parse resources: %w: %w", r.ID, err, errdefs.ErrInvalidArgument))
	}
	if res.Memory != nil && res.Memory.Limit != nil {
		l := uint64(0)
		if *res.Memory.Limit > 0 {
			l = uint64(*res.Memory.Limit)
		}
		s.mu.Lock()
		c.memLimit = s.limit(l)
		s.mu.Unlock()
		s.logger(ctx, r.ID).WithField("limit", l).Info("memory limit updated for new execs; running instances keep theirs")
	}
	return &emptypb.Empty{}, nil
}
