package wasmtask_test

import (
	"syscall"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fixtures"
)

// exitEvents counts the /tasks/exit events the recorder holds.
func (r *recorder) exitEvents() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, topic := range r.topics {
		if topic == runtime.TaskExitEventTopic {
			n++
		}
	}
	return n
}

// An exit hook (what the sandboxer's exit record is written by) runs
// before the exit is published, however the task ends: containerd must
// never hear of an exit that a crash right after could still lose.
func TestOnExitRunsBeforeExitEvent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(t *testing.T, h *harness, id string)
		topics []string // the events published by the exit
	}{
		{"runs to its end", func(t *testing.T, h *harness, id string) {
			r(h.client.Start(h.ctx, &taskAPI.StartRequest{ID: id})).get(t)
		}, []string{runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExitEventTopic}},
		{"killed before start", func(t *testing.T, h *harness, id string) {
			r(h.client.Kill(h.ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL)})).get(t)
		}, []string{runtime.TaskCreateEventTopic, runtime.TaskExitEventTopic}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			b := h.bundle(t, "c", []string{"/app/hello.wasm"}, map[string][]byte{"app/hello.wasm": fixtures.Hello})
			r(h.client.Create(h.ctx, b.req)).get(t)
			ran := make(chan int, 1)
			if err := h.svc.OnExit("c", func() { ran <- h.events.exitEvents() }); err != nil {
				t.Fatal(err)
			}
			tc.end(t, h, "c")
			r(h.client.Wait(h.ctx, &taskAPI.WaitRequest{ID: "c"})).get(t)
			h.events.waitTopics(t, tc.topics...)
			select {
			case n := <-ran:
				if n != 0 {
					t.Fatalf("the exit hook ran after %d exit event(s) were published, want before any", n)
				}
			default:
				t.Fatal("the exit hook did not run by the time the exit was published")
			}
			// A hook added after the exit runs at once.
			late := false
			if err := h.svc.OnExit("c", func() { late = true }); err != nil || !late {
				t.Fatalf("hook added after the exit: ran %v, err %v; want it run at once", late, err)
			}
		})
	}
	h := newHarness(t)
	if err := h.svc.OnExit("nosuch", func() {}); !errdefs.IsNotFound(err) {
		t.Fatalf("OnExit of an unknown task: %v, want NotFound", err)
	}
}
