package quark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	taskevents "github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/forward"
)

// exitKilled is the status a Quark sandbox reports when it ended: Quark's
// process is not the sandboxer's child, so its real status cannot be
// read; it is reported as killed (128+SIGKILL), which it is when Stop
// ended it.
const exitKilled = 137

// Instance is one Quark sandbox: Quark's sandbox process and the Task API
// forwarder in front of its task socket.
type Instance struct {
	sb     backend.Sandbox
	proc   *process // nil for a sandbox found gone by Recover
	events *taskevents.Queue
	fwd    *forward.Forwarder

	mu     sync.Mutex
	client *ttrpc.Client
	tasks  taskAPI.TTRPCTaskService // the v2 bridge; nil once gone
	exit   *backend.Exit
	done   chan struct{}
	// released is closed once the forwarder has released every container
	// after the exit (unmounted their rootfs and stdio).
	released chan struct{}
	closed   bool
}

var _ backend.Instance = (*Instance)(nil)

func newInstance(sb backend.Sandbox, p *process, client *ttrpc.Client, pub events.Publisher) *Instance {
	i := &Instance{sb: sb, proc: p, client: client, tasks: NewV2Bridge(client), done: make(chan struct{}), released: make(chan struct{}), events: taskevents.NewQueue(pub)}
	i.fwd = forward.New(forward.Config{Sandbox: sb.ID, Namespace: sb.Namespace, Host: host{i}, Events: i.events})
	go func() {
		<-p.done
		i.markExited()
	}()
	return i
}

// exitedInstance is a sandbox whose Quark process is gone: it reports the
// exit and can be shut down.
func exitedInstance(sb backend.Sandbox, pub events.Publisher) *Instance {
	i := &Instance{sb: sb, done: make(chan struct{}), released: make(chan struct{}), events: taskevents.NewQueue(pub)}
	i.fwd = forward.New(forward.Config{Sandbox: sb.ID, Namespace: sb.Namespace, Host: host{i}, Events: i.events})
	i.markExited()
	return i
}

// bundle is the sandbox's bundle directory, Quark's root.
func (i *Instance) bundle() string { return filepath.Join(i.sb.StateDir, bundleDir) }

// markExited records the exit once, drops the connection and lets the
// forwarder release every container; a later call returns once that is
// done.
func (i *Instance) markExited() {
	i.mu.Lock()
	if i.exit != nil {
		i.mu.Unlock()
		<-i.released
		return
	}
	i.exit = &backend.Exit{Status: exitKilled, ExitedAt: time.Now()}
	i.tasks = nil
	c := i.client
	i.client = nil
	close(i.done)
	i.mu.Unlock()
	if c != nil {
		c.Close()
	}
	i.fwd.Gone()
	close(i.released)
}

// Tasks is the sandbox's Task API (v3), forwarded to Quark's (v2).
func (i *Instance) Tasks() taskAPI.TTRPCTaskService { return i.fwd }

// Pid is Quark's sandbox process (0 when it was gone at Recover).
func (i *Instance) Pid() uint32 {
	if i.proc == nil {
		return 0
	}
	return uint32(i.proc.pid)
}

// Checkpoint is the process record Recover re-attaches by.
func (i *Instance) Checkpoint() []byte {
	if i.proc == nil {
		return nil
	}
	b, _ := json.Marshal(processRecord{Pid: i.proc.pid, StartTime: i.proc.start})
	return b
}

// Alive is the liveness probe: signal 0 to Quark's process.
func (i *Instance) Alive() bool { return i.proc != nil && i.proc.alive() }

// Stop stops every container (SIGTERM, then SIGKILL after timeout), then
// kills Quark's process with SIGKILL, as Kuasar does.
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) error {
	if i.proc == nil {
		return nil
	}
	if !i.proc.exited() {
		i.fwd.KillAll(ctx, timeout)
	}
	i.proc.kill()
	if !i.proc.exited() {
		return fmt.Errorf("quark sandbox process %d still runs 10s after SIGKILL: %w", i.proc.pid, errdefs.ErrUnavailable)
	}
	i.markExited()
	return nil
}

// Wait blocks until Quark's process has exited or ctx is done.
func (i *Instance) Wait(ctx context.Context) (backend.Exit, error) {
	select {
	case <-i.done:
		// An exit already reported wins over a done ctx.
		ctx = context.Background()
	default:
	}
	select {
	case <-i.done:
		i.mu.Lock()
		defer i.mu.Unlock()
		return *i.exit, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}

// Metrics reports Quark's process's memory and CPU time and the live task
// count.
func (i *Instance) Metrics(ctx context.Context) (backend.Metrics, error) {
	m := backend.Metrics{Tasks: i.fwd.Count()}
	if i.proc == nil || i.proc.exited() {
		return m, nil
	}
	pid := i.proc.pid
	if err := m.AddProcess(pid); err != nil {
		return m, fmt.Errorf("quark process %d metrics: %w", pid, err)
	}
	return m, nil
}

// Update is not supported: Quark's sandbox sizes are fixed at start.
func (i *Instance) Update(ctx context.Context, r backend.Resources) error {
	return fmt.Errorf("resizing a running Quark sandbox: recreate the pod with new limits: %w", errdefs.ErrNotImplemented)
}

// Shutdown kills Quark if it still runs, unmounts every container's
// rootfs and stdio, and removes the bundle and socket. It is idempotent.
func (i *Instance) Shutdown(ctx context.Context) error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.mu.Unlock()
	var errs []error
	if err := i.Stop(ctx, 2*time.Second); err != nil {
		errs = append(errs, err)
	}
	if i.proc != nil {
		i.proc.close()
	}
	i.markExited()
	if err := cleanupDir(i.bundle()); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Join(i.sb.StateDir, socketName))
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := i.events.Close(qctx); err != nil {
		log.G(ctx).WithField("sandbox", i.sb.ID).WithError(err).Warn("quark: task events not all delivered")
	}
	return errors.Join(errs...)
}
