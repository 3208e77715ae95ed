package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/platforms"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kuasar-go/kuasar/internal/exitrecord"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestKill9KeepsRecordedExit: a task exits 3 and, before anyone deletes it,
// the sandboxer is killed with SIGKILL. containerd then runs
// `containerd-shim-kuasar-v1 delete` and publishes what it prints as the
// task's exit: it must be the recorded 3, not the 137 the binary always
// reported before.
func TestKill9KeepsRecordedExit(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-exit:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _, st := startGoSandbox(ctx, t, e, "exitsb")
	rec, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	img := containerd.NewImageWithPlatform(c, rec, platforms.Only(ocispec.Platform{OS: "wasi", Architecture: "wasm"}))
	ctr, err := c.NewContainer(ctx, "exitctr",
		containerd.WithSandbox("exitsb"),
		containerd.WithRuntime("io.containerd.kuasar.v1", nil),
		containerd.WithImage(img),
		containerd.WithNewSnapshot("exitctr-snap", img),
		containerd.WithNewSpec(oci.WithProcessArgs("/wasi.wasm", "exit", "3")),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)

	events, errs := c.Subscribe(ctx, `topic=="/tasks/exit"`)
	_, code := runGoTask(ctx, t, e, ctr, cio.NullIO, st)
	if code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	// nextExit returns the next /tasks/exit event of the container.
	nextExit := func(what string) *eventstypes.TaskExit {
		for {
			select {
			case env := <-events:
				v, err := typeurl.UnmarshalAny(env.Event)
				if err != nil {
					t.Fatal(err)
				}
				if ex, ok := v.(*eventstypes.TaskExit); ok && ex.ContainerID == "exitctr" {
					return ex
				}
			case err := <-errs:
				t.Fatalf("%s: events: %v", what, err)
			case <-ctx.Done():
				t.Fatalf("%s: no /tasks/exit event\n%s", what, tail(e.Containerd.Output(), 30))
			}
		}
	}
	if ex := nextExit("exit published by the sandboxer"); ex.ExitStatus != 3 {
		t.Fatalf("first exit event %d, want 3", ex.ExitStatus)
	}
	// The sandboxer records the exit in the bundle (containerd's task
	// state directory) on a waiter of its own, which may lag the event
	// under load: the kill comes once the record is there (poll, with the
	// test's deadline), as the test is about a recorded exit.
	bundle := filepath.Join(e.Dir, "state", "io.containerd.runtime.v2.task", "k8s.io", "exitctr")
	for {
		_, err := exitrecord.Read(bundle)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no exit record in %s: %v", bundle, err)
		case <-time.After(10 * time.Millisecond): // polling interval
		}
	}

	e.Sandboxer.Kill9()
	if ex := nextExit("exit published by containerd after it lost the sandboxer"); ex.ExitStatus != 3 {
		t.Fatalf("containerd reported exit %d after the sandboxer died, want the recorded 3\n%s", ex.ExitStatus, tail(e.Containerd.Output(), 30))
	}
	e.StartSandboxer()
}
