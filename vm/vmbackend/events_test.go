package vmbackend_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/protobuf/proto"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// published is one event a recordingPublisher received.
type published struct {
	ns, topic string
	ev        events.Event
}

// recordingPublisher is an events.Publisher that keeps what it is given.
type recordingPublisher struct {
	mu      sync.Mutex
	evs     []published
	changed chan struct{}
}

func newRecordingPublisher() *recordingPublisher {
	return &recordingPublisher{changed: make(chan struct{})}
}

// Publish records the event with its namespace.
func (r *recordingPublisher) Publish(ctx context.Context, topic string, ev events.Event) error {
	ns, _ := namespaces.Namespace(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, published{ns, topic, ev})
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// waitFor returns the events once one matches, or fails at ctx's end.
func (r *recordingPublisher) waitFor(t *testing.T, ctx context.Context, what string, match func(published) bool) []published {
	t.Helper()
	for {
		r.mu.Lock()
		evs, ch := append([]published(nil), r.evs...), r.changed
		r.mu.Unlock()
		for _, e := range evs {
			if match(e) {
				return evs
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("no %s event; got %s", what, describe(evs))
		}
	}
}

func describe(evs []published) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  %s %s %v", e.ns, e.topic, e.ev)
	}
	return s
}

func exitOf(id string) func(published) bool {
	return func(e published) bool {
		x, ok := e.ev.(*eventstypes.TaskExit)
		return ok && x.ID == id
	}
}

// TestTaskEvents runs containers and an exec in a real VM with a
// recording publisher: the forwarder must publish create, start, exit
// (found without anyone calling Wait, with the status and time the guest
// agent reports), exec-added, exec-started and delete, in order, in the
// request's namespace, as the Wasm task service does.
func TestTaskEvents(t *testing.T) {
	a, ctx := vmTest(t, 3*time.Minute)
	pub := newRecordingPublisher()
	b := qemuBackend(t, ctx, qemuConfig(t, a), vmbackend.WithPublisher(pub))
	bi, _ := startSandbox(t, ctx, b, backend.Sandbox{ID: "events-sandbox", Namespace: "sandbox-ns"})
	defer bi.Shutdown(context.Background())
	ctx = namespaces.WithNamespace(ctx, "events-ns")
	tasks := bi.Tasks()
	root := busyboxRootfs(t)

	// c1 exits 3 by itself: its exit is published with nobody waiting.
	startContainer(t, ctx, bi, "c1", bundle(t, root, "/bin/sh", "-c", "exit 3"))
	pub.waitFor(t, ctx, "/tasks/exit of c1", exitOf("c1"))
	del1, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}

	// c2 runs; an exec exits 7; then c2 is killed.
	startContainer(t, ctx, bi, "c2", bundle(t, root, "/bin/sleep", "60"))
	spec := `{"args":["/bin/sh","-c","exit 7"],"env":["PATH=/bin"],"cwd":"/","user":{"uid":0,"gid":0}}`
	if _, err := tasks.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c2", ExecID: "e1", Spec: anySpec(spec)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Start(ctx, &taskAPI.StartRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	w1, err := tasks.Wait(ctx, &taskAPI.WaitRequest{ID: "c2", ExecID: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	pub.waitFor(t, ctx, "/tasks/exit of e1", exitOf("e1"))
	if _, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.Kill(ctx, &taskAPI.KillRequest{ID: "c2", Signal: uint32(syscall.SIGKILL), All: true}); err != nil {
		t.Fatal(err)
	}
	pub.waitFor(t, ctx, "/tasks/exit of c2", exitOf("c2"))
	del2, err := tasks.Delete(ctx, &taskAPI.DeleteRequest{ID: "c2"})
	if err != nil {
		t.Fatal(err)
	}
	evs := pub.waitFor(t, ctx, "/tasks/delete of c2", func(e published) bool {
		d, ok := e.ev.(*eventstypes.TaskDelete)
		return ok && d.ContainerID == "c2"
	})

	want := []struct {
		topic string
		ev    proto.Message
	}{
		{runtime.TaskCreateEventTopic, nil},
		{runtime.TaskStartEventTopic, nil},
		{runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: "c1", ID: "c1", ExitStatus: 3, ExitedAt: del1.ExitedAt}},
		{runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: "c1", ExitStatus: 3, ExitedAt: del1.ExitedAt}},
		{runtime.TaskCreateEventTopic, nil},
		{runtime.TaskStartEventTopic, nil},
		{runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: "c2", ExecID: "e1"}},
		{runtime.TaskExecStartedEventTopic, nil},
		{runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: "c2", ID: "e1", ExitStatus: 7, ExitedAt: w1.ExitedAt}},
		{runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: "c2", ID: "c2", ExitStatus: 137, ExitedAt: del2.ExitedAt}},
		{runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: "c2", ExitStatus: 137, ExitedAt: del2.ExitedAt}},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d:%s", len(evs), len(want), describe(evs))
	}
	pids := map[string]uint32{}
	for i, w := range want {
		e := evs[i]
		if e.topic != w.topic || e.ns != "events-ns" {
			t.Errorf("event %d: %s in %q, want %s in events-ns", i, e.topic, e.ns, w.topic)
			continue
		}
		// Pids are the guest's: compare them across events, not to a value.
		switch x := e.ev.(type) {
		case *eventstypes.TaskCreate:
			if x.Pid == 0 || x.Bundle == "" {
				t.Errorf("create %+v: want the guest pid and the host bundle", x)
			}
			pids[x.ContainerID] = x.Pid
		case *eventstypes.TaskStart:
			if x.Pid != pids[x.ContainerID] {
				t.Errorf("start %+v: pid differs from create's %d", x, pids[x.ContainerID])
			}
		case *eventstypes.TaskExecStarted:
			if x.Pid == 0 || x.ExecID != "e1" {
				t.Errorf("exec-started %+v", x)
			}
			pids["e1"] = x.Pid
		case *eventstypes.TaskExit:
			id := x.ID
			if x.Pid != pids[id] || x.ExitedAt == nil {
				t.Errorf("exit %+v: want pid %d and a time", x, pids[id])
			}
			x.Pid = 0
		case *eventstypes.TaskDelete:
			if x.Pid != pids[x.ContainerID] {
				t.Errorf("delete %+v: want pid %d", x, pids[x.ContainerID])
			}
			x.Pid = 0
		}
		if w.ev != nil && !proto.Equal(e.ev.(proto.Message), w.ev) {
			t.Errorf("event %d %s: %v, want %v (status and time as the agent reported them)", i, e.topic, e.ev, w.ev)
		}
	}
}
