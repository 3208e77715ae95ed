package wasmtask

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/task/exithook"
	"github.com/kuasar-go/kuasar/task/stdio"
	"github.com/kuasar-go/kuasar/wasm"
)

// maxLockedRuns bounds how many runs hold an OS thread for CPU accounting.
const maxLockedRuns = 4096

// lockedRuns counts the runs in progress (locked or not).
var lockedRuns atomic.Int64

// process is one Wasm instance of a container: its init process (execID "")
// or an exec.
type process struct {
	execID string
	module wasm.Module
	cfg    wasm.RunConfig
	io     stdio.Config

	mu         sync.Mutex
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	pipes      *stdio.Pipes
	cancel     context.CancelFunc
	// done is closed (exit cancelled) once the process has exited: exit
	// lets the sandboxer react to it with context.AfterFunc instead of
	// a goroutine parked in Wait per task.
	done     <-chan struct{}
	exit     context.Context
	markDone context.CancelFunc
	// exitHooks run once the process has exited, before its exit is
	// published (Service.OnExit).
	exitHooks exithook.Hooks

	signal  atomic.Int32
	inst    atomic.Value // wasm.Instance, set while running
	tid     atomic.Int64 // OS thread running the guest, 0 when not running
	cpuBase atomic.Uint64
	cpuUsed atomic.Uint64 // CPU time of finished runs
	runErr  error         // why Run failed; read only after done is closed
}

func newProcess(execID string, m wasm.Module, cfg wasm.RunConfig, io stdio.Config, pipes *stdio.Pipes) *process {
	p := &process{execID: execID, module: m, cfg: cfg, io: io, pipes: pipes, status: task.Status_CREATED}
	p.initDone()
	return p
}

func (p *process) initDone() {
	p.exit, p.markDone = context.WithCancel(context.Background())
	p.done = p.exit.Done()
}

// exitedProcess is a process known only to have ended (after a restart).
func exitedProcess(execID string, status uint32, at time.Time) *process {
	p := &process{execID: execID, status: task.Status_STOPPED, exitStatus: status, exitedAt: at}
	p.initDone()
	p.markDone()
	return p
}

func (p *process) state() (task.Status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitStatus, p.exitedAt
}

// start runs the instance on its own goroutine. onStart is called once the
// start is certain, before the guest runs; onExit once the instance ended,
// its stdio closed and its state is STOPPED.
func (p *process) start(onStart func(), onExit func(p *process)) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.status {
	case task.Status_CREATED:
	case task.Status_RUNNING:
		return fmt.Errorf("process already started: %w", errdefs.ErrFailedPrecondition)
	default:
		return fmt.Errorf("process already exited: %w", errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.status = task.Status_RUNNING
	cfg := p.cfg
	if p.pipes != nil {
		cfg.Stdin, cfg.Stdout, cfg.Stderr = p.pipes.Stdin, p.pipes.Stdout, p.pipes.Stderr
	}
	cfg.Signal = func() int { return int(p.signal.Load()) }
	cfg.Started = func(i wasm.Instance) { p.inst.Store(&i) }
	onStart()
	go p.run(ctx, cfg, onExit)
	return nil
}

func (p *process) run(ctx context.Context, cfg wasm.RunConfig, onExit func(*process)) {
	// The guest runs on this goroutine; locking it to its thread lets
	// Stats/Metrics read the thread's CPU clock while it runs. A locked
	// thread stays allocated while the guest blocks, so past
	// maxLockedRuns concurrent runs (far below Go's 10000-thread limit)
	// new runs are not locked and their CPU time is not counted.
	var code int
	var err error
	if lockedRuns.Add(1) <= maxLockedRuns {
		p.lockThread()
		// While the guest waits (for its stdin, or in poll_oneoff: a
		// sleep) its thread is released:
		// an idle guest holds no thread (nor the thread's stacks).
		cfg.Blocking = func() func() {
			p.unlockThread()
			return p.lockThread
		}
		code, err = p.module.Run(ctx, cfg)
		p.unlockThread()
	} else {
		code, err = p.module.Run(ctx, cfg)
	}
	lockedRuns.Add(-1)
	p.cancel()

	if sig := p.signal.Load(); sig > 0 {
		// Killed: whatever the guest did while it was being stopped, the
		// container ends the way a signalled Linux process does.
		code = 128 + int(sig)
	}
	if err != nil && code == 0 {
		code = wasm.ExitKilled
	}
	if err != nil && p.signal.Load() == 0 && p.pipes != nil && p.pipes.Stderr != nil {
		// Why the guest died (a trap, a failed instantiation) goes to its
		// stderr, as a Linux runtime's crash report does: the container's
		// log (and `kuasar run`'s terminal) then say why it exited 137.
		fmt.Fprintf(p.pipes.Stderr, "kuasar: wasm guest failed: %v\n", err)
	}
	// The exit is published once containerd has taken the guest's output
	// (stdio.Pipes.Drain): a fast guest could otherwise lose all of it. A
	// killed guest is not held: a kill must end it promptly even when
	// nobody reads its output, and whoever kills it has long been reading.
	if p.signal.Load() == 0 {
		if err := p.pipes.Drain(stdio.DrainTimeout); err != nil {
			log.L.WithField("exec", p.execID).WithError(err).Warn("wasm task output may be lost")
		}
	}
	p.pipes.Close()
	p.mu.Lock()
	p.status = task.Status_STOPPED
	p.exitStatus = uint32(code)
	p.exitedAt = time.Now()
	p.mu.Unlock()
	p.inst.Store((*wasm.Instance)(nil))
	p.runErr = err
	p.markDone()
	onExit(p)
}

// lockThread locks the guest's goroutine to its thread and starts counting
// the thread's CPU time.
func (p *process) lockThread() {
	runtime.LockOSThread()
	tid := unix.Gettid()
	p.cpuBase.Store(threadCPUNanos(tid))
	p.tid.Store(int64(tid))
}

// unlockThread adds the thread's CPU time since lockThread to the
// process's and unlocks the goroutine from it.
func (p *process) unlockThread() {
	tid := int(p.tid.Load())
	used := threadCPUNanos(tid) - p.cpuBase.Load()
	p.tid.Store(0)
	p.cpuUsed.Add(used)
	runtime.UnlockOSThread()
}

// kill stops the process with sig. A created process that never ran ends
// at once with 128+sig.
func (p *process) kill(sig syscall.Signal, onExit func(*process)) error {
	p.mu.Lock()
	switch p.status {
	case task.Status_CREATED:
		p.status = task.Status_STOPPED
		p.exitStatus = uint32(128 + int(sig))
		p.exitedAt = time.Now()
		p.mu.Unlock()
		p.pipes.Close()
		p.markDone()
		onExit(p)
		return nil
	case task.Status_RUNNING:
		p.signal.CompareAndSwap(0, int32(sig))
		p.mu.Unlock()
		p.cancel()
		p.pipes.Abort()
		return nil
	default:
		p.mu.Unlock()
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
}

// memoryBytes is the live instance's linear memory, 0 when not running.
func (p *process) memoryBytes() uint64 {
	v, _ := p.inst.Load().(*wasm.Instance)
	if v == nil || *v == nil {
		return 0
	}
	return (*v).MemoryBytes()
}

// cpuNanos is the CPU time the process's runs used so far.
func (p *process) cpuNanos() uint64 {
	used := p.cpuUsed.Load()
	if tid := p.tid.Load(); tid != 0 {
		if now := threadCPUNanos(int(tid)); now > p.cpuBase.Load() && p.tid.Load() == tid {
			used += now - p.cpuBase.Load()
		}
	}
	return used
}

func (p *process) running() bool {
	s, _, _ := p.state()
	return s == task.Status_RUNNING
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
