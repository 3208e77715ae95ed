package sandboxer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/metadata"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/unixsock"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// sandbox is one sandbox the service knows, with its persisted record, its
// backend instance (nil until the kind is decided) and its Task API server.
type sandbox struct {
	svc *Service

	// recovering is closed once a recovered sandbox is re-attached; nil for
	// sandboxes created by this process.
	recovering chan struct{}

	// startMu serialises backend starts (held without mu while one runs).
	startMu sync.Mutex

	mu   sync.Mutex
	rec  record
	inst backend.Instance
	tsrv *ttrpc.Server
	// tstop stops accepting on the task socket (acceptor.add).
	tstop func()
	// done is closed when the sandbox has exited; rec.ExitStatus/ExitedAt
	// then hold how.
	done     chan struct{}
	doneOnce sync.Once
	// removed is set once Shutdown deleted the sandbox's directory: nothing
	// may write its record again.
	removed bool
}

func newSandbox(s *Service, r *record) *sandbox {
	sb := &sandbox{svc: s, rec: *r, done: make(chan struct{})}
	if r.Exited {
		sb.doneOnce.Do(func() { close(sb.done) })
	}
	return sb
}

func (sb *sandbox) logger(ctx context.Context) *log.Entry {
	return log.G(ctx).WithField("sandbox", sb.rec.ID)
}

func (sb *sandbox) dir() string        { return sb.svc.store.dir(sb.rec.ID) }
func (sb *sandbox) socketPath() string { return sb.svc.store.taskSocket(sb.rec.ID) }

// address is the Task API address containerd dials (version 3).
func (sb *sandbox) address() string { return "ttrpc+unix://" + sb.socketPath() }

func (sb *sandbox) backendSandbox() backend.Sandbox {
	return backend.Sandbox{
		ID:          sb.rec.ID,
		Namespace:   sb.rec.Namespace,
		StateDir:    sb.svc.store.backendDir(sb.rec.ID),
		NetnsPath:   sb.rec.NetnsPath,
		Hostname:    sb.rec.Hostname,
		Annotations: sb.rec.Annot,
		Labels:      sb.rec.Labels,
		Resources:   sb.rec.Resources,
		Hypervisor:  sb.rec.Hypervisor,
		WasmEngine:  sb.wasmEngine(),
	}
}

// wasmEngine is the Wasm engine the pod asks for: its
// kuasar.io/wasm-engine annotation, else its runtime handler's
// wasm_engine; "" leaves the choice to the wasm backend's default.
func (sb *sandbox) wasmEngine() string {
	if e := sb.rec.Annot[annotationWasmEngine]; e != "" {
		return e
	}
	if sb.svc.cfg != nil {
		return sb.svc.cfg.RuntimeHandlers[sb.rec.Handler].WasmEngine
	}
	return ""
}

// saveLocked persists the record (with the instance's checkpoint).
func (sb *sandbox) saveLocked() error {
	if sb.removed {
		return nil
	}
	if sb.inst != nil {
		sb.rec.Checkpoint = sb.inst.Checkpoint()
	}
	return sb.svc.store.save(&sb.rec)
}

// serveTasksLocked listens on the sandbox's task socket and serves the Task
// API there, forwarding to the backend instance.
func (sb *sandbox) serveTasksLocked(ctx context.Context) error {
	if sb.tsrv != nil {
		return nil
	}
	p := sb.socketPath()
	if len(p) > maxSocketPath {
		// paths.go makes this impossible; kept as the last line of defence.
		return fmt.Errorf("task socket path %s is %d bytes, over the unix limit of %d: %w",
			p, len(p), maxSocketPath, errdefs.ErrInternal)
	}
	// The socket is made and polled directly (unixsock.ListenFD, the
	// acceptor's epoll): a net.Listener would cost a dozen more system
	// calls per sandbox start. Its directory exists from the first
	// sandbox on: created only when bind says it is missing.
	fd, err := unixsock.ListenFD(p, sb.svc.sockMode)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		fd, err = unixsock.ListenFD(p, sb.svc.sockMode)
	}
	if err != nil {
		return fmt.Errorf("task socket: %w", err)
	}
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(sb.intercept))
	if err != nil {
		unix.Close(fd)
		removeSocket(p)
		return err
	}
	taskAPI.RegisterTTRPCTaskService(srv, newTaskForwarder(sb))
	// One goroutine of the service accepts on every sandbox's socket.
	stop, err := sb.svc.acceptor.add(ctx, fd, p, srv)
	if err != nil {
		srv.Close()
		return err
	}
	sb.tsrv, sb.tstop = srv, stop
	return nil
}

// intercept runs every Task API call: it gives calls without a containerd
// namespace the sandbox's own, and turns a panic in a backend's task service
// into an Internal error for that call: one faulty call must not take every
// sandbox of the process down with it.
func (sb *sandbox) intercept(ctx context.Context, um ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (resp interface{}, err error) {
	// The task server's context descends from the Sandbox API call that
	// started it: that gRPC call's metadata is not this call's. Hidden, so
	// the namespace is the caller's ttrpc header or else the sandbox's (as
	// after a restart, when no gRPC call started the server), and each
	// namespace lookup no longer copies the old call's headers into a new
	// map (a twentieth of the sandboxer's CPU per task).
	ctx = metadata.NewIncomingContext(ctx, nil)
	if _, ok := namespaces.Namespace(ctx); !ok && sb.rec.Namespace != "" {
		ctx = namespaces.WithNamespace(ctx, sb.rec.Namespace)
	}
	method := path.Base(info.FullMethod)
	crashpoint.Hit("task." + method)
	defer func() {
		if err == nil {
			crashpoint.Hit("task." + method + ".done")
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			sb.logger(ctx).WithField("method", info.FullMethod).WithField("panic", r).
				Errorf("task service panicked\n%s", debug.Stack())
			err = errgrpc.ToGRPC(fmt.Errorf("%s in sandbox %s: internal error (panic: %v): %w", info.FullMethod, sb.rec.ID, r, errdefs.ErrInternal))
		}
	}()
	return m(ctx, um)
}

// closeTaskServer stops serving the task socket. The socket file stays for
// a sandbox that lives on (the next process serves it again); Shutdown and
// a failed Start remove it.
func (sb *sandbox) closeTaskServer() {
	if sb.tstop != nil {
		sb.tstop()
		sb.tstop = nil
	}
	if sb.tsrv != nil {
		sb.tsrv.Close()
		sb.tsrv = nil
	}
}

// startBackend starts the backend called kind and watches its exit. The
// backend starts outside sb.mu (a VM boots for seconds while Status, Metrics
// and Wait must keep answering); startMu lets one start run at a time.
func (sb *sandbox) startBackend(ctx context.Context, kind, hypervisor string) error {
	sb.startMu.Lock()
	defer sb.startMu.Unlock()
	sb.mu.Lock()
	if sb.inst != nil {
		sb.mu.Unlock()
		return nil
	}
	if sb.removed || sb.rec.Exited {
		sb.mu.Unlock()
		return fmt.Errorf("sandbox %s has exited: create a new one: %w", sb.rec.ID, errdefs.ErrFailedPrecondition)
	}
	b, ok := sb.svc.backends[kind]
	if !ok {
		sb.mu.Unlock()
		return fmt.Errorf("sandbox %s asks for isolation %q but this sandboxer has no such backend (have %v): set kuasar.io/isolation or the runtime handler's isolation to one of them: %w",
			sb.rec.ID, kind, sb.svc.backendNames(), errdefs.ErrFailedPrecondition)
	}
	sb.rec.Backend = kind
	if hypervisor != "" {
		sb.rec.Hypervisor = hypervisor
	}
	bs := sb.backendSandbox()
	sb.mu.Unlock()

	var inst backend.Instance
	// One mkdir; os.MkdirAll (two stats first) only when that fails.
	err := unix.Mkdir(bs.StateDir, 0o700)
	if err != nil {
		err = os.MkdirAll(bs.StateDir, 0o700)
	}
	if err == nil {
		inst, err = b.Start(ctx, bs)
	}
	if err == nil {
		crashpoint.Hit("sandbox.backend.started")
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err != nil {
		sb.rec.Backend = ""
		os.RemoveAll(bs.StateDir)
		return fmt.Errorf("start %s sandbox %s: %w", kind, sb.rec.ID, err)
	}
	if sb.removed || sb.rec.Exited {
		// Stopped or shut down while the backend was starting.
		inst.Shutdown(context.WithoutCancel(ctx))
		os.RemoveAll(bs.StateDir)
		return fmt.Errorf("sandbox %s was stopped while its %s backend started: %w", sb.rec.ID, kind, errdefs.ErrFailedPrecondition)
	}
	sb.inst = inst
	if err := sb.saveLocked(); err != nil {
		inst.Shutdown(context.WithoutCancel(ctx))
		sb.inst = nil
		sb.rec.Backend = ""
		os.RemoveAll(bs.StateDir)
		return fmt.Errorf("persist sandbox %s: %w", sb.rec.ID, err)
	}
	crashpoint.Hit("sandbox.backend.saved")
	sb.logger(ctx).WithField("backend", kind).Info("backend started")
	sb.watchExit(ctx, inst)
	return nil
}

// watchExit runs watch once inst has exited: through context.AfterFunc when
// the backend can tell without a goroutine (backend.ExitNotifier), so that
// an idle sandbox costs no parked goroutine; else on a goroutine of its own.
func (sb *sandbox) watchExit(ctx context.Context, inst backend.Instance) {
	if n, ok := inst.(backend.ExitNotifier); ok {
		context.AfterFunc(n.ExitContext(), func() { sb.watch(ctx, inst) })
		return
	}
	go sb.watch(ctx, inst)
}

// watch records the instance's exit.
func (sb *sandbox) watch(ctx context.Context, inst backend.Instance) {
	ctx = context.WithoutCancel(ctx)
	exit, err := inst.Wait(ctx)
	if err != nil {
		sb.logger(ctx).WithError(err).Warn("wait for sandbox failed; reporting exit 137")
		exit = backend.Exit{Status: 137, ExitedAt: timeNow()}
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.inst != inst || sb.rec.Exited {
		// Another instance, or the exit is recorded already (by stop,
		// which saved it, or by Shutdown, which removed the record).
		return
	}
	sb.markExitedLocked(exit)
	if err := sb.saveLocked(); err != nil {
		sb.logger(ctx).WithError(err).Warn("persist exit")
	}
}

// exitedLocked records inst's exit at once when inst has exited already
// (its Wait answers without blocking), as watch would, and reports whether
// it did. Stop uses it so that its reply does not wait for watch's
// goroutine to be scheduled (a hand-off and a wake-up per sandbox).
func (sb *sandbox) exitedLocked(ctx context.Context, inst backend.Instance) (bool, error) {
	if sb.inst != inst || sb.rec.Exited {
		return sb.rec.Exited, nil
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	exit, err := inst.Wait(done)
	if err != nil {
		return false, nil
	}
	sb.markExitedLocked(exit)
	if err := sb.saveLocked(); err != nil {
		return true, fmt.Errorf("persist exit of sandbox %s: %w", sb.rec.ID, err)
	}
	return true, nil
}

func (sb *sandbox) markExitedLocked(exit backend.Exit) {
	if sb.rec.Exited {
		return
	}
	if exit.ExitedAt.IsZero() {
		exit.ExitedAt = timeNow()
	}
	sb.rec.Exited = true
	sb.rec.ExitStatus = exit.Status
	sb.rec.ExitedAt = exit.ExitedAt
	sb.rec.State = stateNotRdy
	sb.doneOnce.Do(func() { close(sb.done) })
}

// noteExitedLocked records at once the exit of a re-attached instance
// that reports its sandbox exited already (Recover of a sandbox whose VMM
// or process is gone): the reconciliation that follows the re-attaching
// must see it not running and kill what it left (virtiofsd), and cannot
// wait for sb.watch, which marks it later.
func (sb *sandbox) noteExitedLocked(inst backend.Instance) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if exit, err := inst.Wait(done); err == nil {
		sb.markExitedLocked(exit)
	}
}

// recover re-attaches a sandbox read from disk.
func (sb *sandbox) recover(ctx context.Context) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	lg := sb.logger(ctx)
	if sb.rec.State == stateCreated || sb.rec.Backend == "" {
		// containerd never saw this backend start (its Start, or the
		// first task's Create that starts it, got no reply): whatever it
		// left is cleaned up.
		sb.resetUnstartedLocked(ctx)
	}
	if sb.rec.State == stateCreated {
		if err := sb.svc.store.save(&sb.rec); err != nil {
			lg.WithError(err).Warn("persist recovered record")
		}
		return
	}
	if sb.rec.Backend != "" {
		b, ok := sb.svc.backends[sb.rec.Backend]
		if !ok {
			lg.WithField("backend", sb.rec.Backend).Warn("backend of recovered sandbox is not available; reporting it exited")
			sb.markExitedLocked(backend.Exit{Status: 137})
		} else {
			inst, err := b.Recover(ctx, sb.backendSandbox(), sb.rec.Checkpoint)
			if err != nil {
				lg.WithError(err).Warn("recover backend; reporting the sandbox exited")
				sb.markExitedLocked(backend.Exit{Status: 137})
			} else {
				sb.inst = inst
				sb.noteExitedLocked(inst)
				sb.watchExit(ctx, inst)
			}
		}
	}
	// A started sandbox whose kind no container decided yet lost nothing
	// with the old process: it stays ready, and its backend starts at its
	// first container as before.
	if err := sb.serveTasksLocked(ctx); err != nil {
		lg.WithError(err).Warn("re-serve task socket")
	}
	if err := sb.svc.store.save(&sb.rec); err != nil {
		lg.WithError(err).Warn("persist recovered record")
	}
	lg.WithField("backend", sb.rec.Backend).WithField("exited", sb.rec.Exited).Info("sandbox recovered")
}

// stop stops the sandbox: the backend within timeout, or just marks a
// sandbox that never got a backend exited. It is idempotent.
func (sb *sandbox) stop(ctx context.Context, timeout time.Duration) error {
	sb.mu.Lock()
	inst := sb.inst
	if inst == nil {
		sb.markExitedLocked(backend.Exit{Status: 0})
		err := sb.saveLocked()
		sb.mu.Unlock()
		return err
	}
	exited := sb.rec.Exited
	sb.mu.Unlock()
	if exited {
		return nil
	}
	if err := inst.Stop(ctx, timeout); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", sb.rec.ID, err)
	}
	sb.mu.Lock()
	exited, err := sb.exitedLocked(ctx, inst)
	sb.mu.Unlock()
	if exited || err != nil {
		return err
	}
	select {
	case <-sb.done:
	case <-ctx.Done():
		return errDeadline(ctx, "sandbox "+sb.rec.ID+" did not exit after stop")
	}
	return nil
}

func (s *Service) backendNames() []string {
	names := make([]string, 0, len(s.backends))
	for n := range s.backends {
		names = append(names, n)
	}
	return names
}
