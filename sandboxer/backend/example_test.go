package backend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// echoBackend is the smallest Backend: its sandboxes run nothing. A real one
// (wasm/wasmbackend, vm/vmbackend) serves Tasks from its engine or its
// guest agent.
type echoBackend struct{}

func (echoBackend) Name() string { return "echo" }

func (echoBackend) Start(_ context.Context, sb backend.Sandbox) (backend.Instance, error) {
	return &echoInstance{ID: sb.ID, Started: time.Unix(0, 0).UTC(), done: make(chan struct{})}, nil
}

// Recover rebuilds the Instance from its Checkpoint; what ran the sandbox
// is gone, so it reports exit 137 as the contract asks.
func (echoBackend) Recover(_ context.Context, _ backend.Sandbox, checkpoint []byte) (backend.Instance, error) {
	i := &echoInstance{done: make(chan struct{})}
	if err := json.Unmarshal(checkpoint, i); err != nil {
		return nil, err
	}
	i.exit = backend.Exit{Status: 137}
	close(i.done)
	return i, nil
}

type echoInstance struct {
	// Embedding the Task service leaves its methods unimplemented; the
	// sandboxer forwards every Task call of the sandbox to it.
	taskAPI.TTRPCTaskService `json:"-"`
	ID                       string
	Started                  time.Time
	exit                     backend.Exit
	done                     chan struct{}
}

func (i *echoInstance) Tasks() taskAPI.TTRPCTaskService { return i.TTRPCTaskService }
func (i *echoInstance) Pid() uint32                     { return 0 }
func (i *echoInstance) Checkpoint() []byte              { b, _ := json.Marshal(i); return b }

func (i *echoInstance) Stop(context.Context, time.Duration) error {
	select {
	case <-i.done:
	default:
		close(i.done)
	}
	return nil
}

func (i *echoInstance) Wait(ctx context.Context) (backend.Exit, error) {
	select {
	case <-i.done:
		return i.exit, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}

func (i *echoInstance) Metrics(context.Context) (backend.Metrics, error) {
	return backend.Metrics{}, nil
}
func (i *echoInstance) Update(context.Context, backend.Resources) error { return nil }
func (i *echoInstance) Shutdown(ctx context.Context) error              { return i.Stop(ctx, 0) }

// Example walks a Backend through what the sandboxer does with it: Start a
// sandbox, persist its Checkpoint, and after a restart Recover it from that
// checkpoint, see it exited and shut it down.
func Example() {
	ctx := context.Background()
	var b backend.Backend = echoBackend{}
	sb := backend.Sandbox{ID: "pod-1", Namespace: "k8s.io"}
	inst, err := b.Start(ctx, sb)
	if err != nil {
		panic(err)
	}
	record := inst.Checkpoint() // the sandboxer stores this in its record

	// ... the sandboxer restarts ...
	again, err := b.Recover(ctx, sb, record)
	if err != nil {
		panic(err)
	}
	exit, _ := again.Wait(ctx)
	fmt.Println(b.Name(), string(record), exit.Status)
	fmt.Println(again.Shutdown(ctx), inst.Shutdown(ctx))
	// Output:
	// echo {"ID":"pod-1","Started":"1970-01-01T00:00:00Z"} 137
	// <nil> <nil>
}
