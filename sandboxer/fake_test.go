package sandboxer

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// fakeBackend is a test backend: its instances "run" until stopped and
// remember task creations. Real-backend behaviour is covered by the e2e
// tests with the wasm backend.
type fakeBackend struct {
	name string

	mu        sync.Mutex
	started   []string
	recovered []string
	shutdown  []string
	dirs      []string // StateDir of each started sandbox
	failStart error
	// gate, when set, holds Start until it is closed.
	gate chan struct{}
	// recoverGate, when set, holds Recover until it is closed.
	recoverGate chan struct{}
	// recoverLive makes Recover re-attach (a live instance) instead of
	// reporting the sandbox exited.
	recoverLive bool
	// waitGate, when set, holds every Wait with a ctx not yet done until
	// it is closed, exit or not: the goroutine that watches a sandbox
	// (sb.watch) learns of an exit only then, as when the scheduler runs
	// it late. A Wait with a done ctx still reports an exit at once.
	waitGate chan struct{}
}

func (b *fakeBackend) Name() string { return b.name }

func (b *fakeBackend) Start(ctx context.Context, sb backend.Sandbox) (backend.Instance, error) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failStart != nil {
		return nil, b.failStart
	}
	b.started = append(b.started, sb.ID)
	b.dirs = append(b.dirs, sb.StateDir)
	return newFakeInstance(b, sb, false), nil
}

func (b *fakeBackend) Recover(ctx context.Context, sb backend.Sandbox, cp []byte) (backend.Instance, error) {
	if b.recoverGate != nil {
		<-b.recoverGate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var c struct{ ID string }
	if err := json.Unmarshal(cp, &c); err != nil || c.ID != sb.ID {
		return nil, fmt.Errorf("bad checkpoint %q: %w", cp, errdefs.ErrInvalidArgument)
	}
	b.recovered = append(b.recovered, sb.ID)
	return newFakeInstance(b, sb, !b.recoverLive), nil
}

type fakeInstance struct {
	b    *fakeBackend
	sb   backend.Sandbox
	done chan struct{}
	once sync.Once
	exit backend.Exit

	mu    sync.Mutex
	tasks map[string]bool
	res   backend.Resources
}

func newFakeInstance(b *fakeBackend, sb backend.Sandbox, dead bool) *fakeInstance {
	i := &fakeInstance{b: b, sb: sb, done: make(chan struct{}), tasks: map[string]bool{}}
	if dead {
		i.finish(137)
	}
	return i
}

func (i *fakeInstance) finish(code uint32) {
	i.once.Do(func() {
		i.exit = backend.Exit{Status: code, ExitedAt: time.Now()}
		close(i.done)
	})
}

func (i *fakeInstance) Tasks() taskAPI.TTRPCTaskService { return &fakeTasks{i: i} }
func (i *fakeInstance) Pid() uint32                     { return 4242 }
func (i *fakeInstance) Checkpoint() []byte {
	b, _ := json.Marshal(struct{ ID string }{i.sb.ID})
	return b
}
func (i *fakeInstance) Stop(ctx context.Context, timeout time.Duration) error {
	i.finish(0)
	return nil
}
func (i *fakeInstance) Wait(ctx context.Context) (backend.Exit, error) {
	if i.b.waitGate != nil && ctx.Err() == nil {
		select {
		case <-i.b.waitGate:
		case <-ctx.Done():
		}
	}
	select {
	case <-i.done:
		// An exit already reported wins over a done ctx.
		ctx = context.Background()
	default:
	}
	select {
	case <-i.done:
		return i.exit, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}
func (i *fakeInstance) Metrics(ctx context.Context) (backend.Metrics, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return backend.Metrics{MemoryBytes: 65536, CPUNanos: 5_000_000, Tasks: uint32(len(i.tasks))}, nil
}
func (i *fakeInstance) Update(ctx context.Context, r backend.Resources) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.res = r
	return nil
}
func (i *fakeInstance) Shutdown(ctx context.Context) error {
	i.finish(0)
	i.b.mu.Lock()
	i.b.shutdown = append(i.b.shutdown, i.sb.ID)
	i.b.mu.Unlock()
	return nil
}

// fakeTasks implements the few Task API calls the tests make; the embedded
// nil interface makes any other call panic, which the tests would notice.
type fakeTasks struct {
	taskAPI.TTRPCTaskService
	i *fakeInstance
}

func (t *fakeTasks) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	t.i.mu.Lock()
	defer t.i.mu.Unlock()
	if t.i.tasks[r.ID] {
		return nil, errgrpc.ToGRPC(fmt.Errorf("task %s: %w", r.ID, errdefs.ErrAlreadyExists))
	}
	t.i.tasks[r.ID] = true
	return &taskAPI.CreateTaskResponse{Pid: 4242}, nil
}

func (t *fakeTasks) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: 4242, TaskPid: 4242}, nil
}

// Wait returns when the instance has finished, with its exit status.
func (t *fakeTasks) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	select {
	case <-t.i.done:
		return &taskAPI.WaitResponse{ExitStatus: t.i.exit.Status}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
