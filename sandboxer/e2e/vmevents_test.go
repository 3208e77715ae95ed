package e2e

import (
	"context"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestVMTaskEventsContainerd runs a container in a VM sandbox through
// containerd's Go client and reads containerd's own event stream (what
// `ctr events` shows): /tasks/create, /tasks/start, /tasks/exit with the
// container's status 5, then /tasks/delete, all published by the
// sandboxer (containerd publishes none of them itself for a live shim).
func TestVMTaskEventsContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(qemuConfig(t)))
	removeTemplates(t, e)
	const ref = "docker.io/library/busybox-sh:vmevents"
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh", "-c"}), ref)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, _, st := startGoSandbox(ctx, t, e, "vmevsb")
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := c.NewContainer(ctx, "vmevctr",
		containerd.WithSandbox("vmevsb"),
		containerd.WithRuntime("io.containerd.kuasar.v1", nil),
		containerd.WithImage(img),
		containerd.WithNewSnapshot("vmevctr-snap", img),
		containerd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"exit 5"}),
			oci.WithAnnotations(map[string]string{"kuasar.io/isolation": "vm"})),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)

	events, errs := c.Subscribe(ctx, `topic~="^/tasks/"`)
	task, err := ctr.NewTask(ctx, cio.NullIO, containerd.WithTaskAPIEndpoint(st.Address, st.Version))
	if err != nil {
		t.Fatalf("new task: %v\n%s", err, tail(e.Sandboxer.Output(), 30))
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Nobody calls Wait: the exit must come as an event.
	var topics []string
	var exit *eventstypes.TaskExit
	for exit == nil {
		select {
		case env := <-events:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				t.Fatal(err)
			}
			switch x := v.(type) {
			case *eventstypes.TaskCreate:
				if x.ContainerID == "vmevctr" {
					topics = append(topics, env.Topic)
				}
			case *eventstypes.TaskStart:
				if x.ContainerID == "vmevctr" {
					topics = append(topics, env.Topic)
				}
			case *eventstypes.TaskExit:
				if x.ContainerID == "vmevctr" {
					topics = append(topics, env.Topic)
					exit = x
				}
			}
		case err := <-errs:
			t.Fatalf("events: %v", err)
		case <-ctx.Done():
			t.Fatalf("no /tasks/exit event for the VM container; got %v\n%s", topics, tail(e.Sandboxer.Output(), 30))
		}
	}
	if len(topics) != 3 || topics[0] != "/tasks/create" || topics[1] != "/tasks/start" {
		t.Errorf("events %v, want /tasks/create, /tasks/start, /tasks/exit", topics)
	}
	if exit.ExitStatus != 5 || exit.ExitedAt == nil {
		t.Errorf("exit event %v: want status 5 and a time", exit)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case env := <-events:
			v, _ := typeurl.UnmarshalAny(env.Event)
			if d, ok := v.(*eventstypes.TaskDelete); ok && d.ContainerID == "vmevctr" {
				if d.ExitStatus != 5 {
					t.Errorf("delete event %v: want status 5", d)
				}
				return
			}
		case err := <-errs:
			t.Fatalf("events: %v", err)
		case <-ctx.Done():
			t.Fatalf("no /tasks/delete event for the VM container\n%s", tail(e.Sandboxer.Output(), 30))
		}
	}
}
