package cloudhypervisor_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/testenv/chfake"
	ch "github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// TestReattach re-attaches to a running Cloud Hypervisor after the driver
// that started it let go (a sandboxer restart), as the QEMU driver does:
// the API answers again, the agent channel dials through hybrid vsock, and
// Stop of the re-attached VM ends it. Cloud Hypervisor cannot run here:
// this test binary, re-executed, is a fake checked against its OpenAPI
// description (verified against the specification only).
func TestReattach(t *testing.T) {
	chfake.LoadOpenAPI(t) // the fake needs the description: skipped, saying where to put it, when absent
	dir := t.TempDir()
	t.Setenv(chfake.RecordEnv, filepath.Join(dir, "record.json"))
	spec := testenv.FakeVMMSpec(t, chfake.Env, filepath.Join(dir, "state"))
	v, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.StartHealthy(t, v)
	pid := v.Pid()
	v.Detach()

	w, err := ch.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Attach(ctx, os.Getpid()); !errdefs.IsNotFound(err) {
		t.Fatalf("Attach to a process that is not this VM's Cloud Hypervisor: %v; want NotFound", err)
	}
	if err := w.Attach(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if err := w.Health(ctx); err != nil {
		t.Fatalf("re-attached VM unhealthy: %v", err)
	}
	c, err := w.DialAgent(ctx)
	if err != nil {
		t.Fatalf("agent channel after re-attach: %v", err)
	}
	c.Close()
	if err := w.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if alive := w.Wait(ctx); alive != nil {
		t.Fatalf("re-attached Cloud Hypervisor still runs after Stop: %v", alive)
	}
	testenv.NoSockets(t, spec.StateDir)
}
