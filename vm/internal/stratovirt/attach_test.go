package stratovirt_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/stratovirt"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// TestReattach re-attaches to a running StratoVirt and its virtiofsd after
// the driver that started them let go (a sandboxer restart), as the QEMU
// driver does. StratoVirt cannot run here: this test binary, re-executed,
// is a fake StratoVirt serving the QMP dialect and a fake virtiofsd
// serving its socket (verified against the specification only).
func TestReattach(t *testing.T) {
	state := t.TempDir()
	spec := testenv.FakeVMMSpec(t, "KUASAR_FAKE_STRATOVIRT", state)
	spec.ID = "reattach"
	spec.SharedDir = t.TempDir()
	spec.Config.RootfsMode = vm.ShareVirtioFS
	spec.Config.VirtioFSD = spec.Config.Path
	v, err := stratovirt.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.StartHealthy(t, v)
	pid := v.Pid()
	fsd, err := procmark.Read(filepath.Join(state, "virtiofsd"+procmark.RecordExt))
	if err != nil || !procmark.Alive(fsd.Proc()) {
		t.Fatalf("virtiofsd record %+v %v: want a running process", fsd, err)
	}
	v.Detach()

	w, err := stratovirt.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Attach(ctx, os.Getpid()); !errdefs.IsNotFound(err) {
		t.Fatalf("Attach to a process that is not this VM's StratoVirt: %v; want NotFound", err)
	}
	if err := w.Attach(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if err := w.Health(ctx); err != nil {
		t.Fatalf("re-attached VM unhealthy: %v", err)
	}
	if err := w.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, p := range []procmark.Proc{{Pid: pid}, fsd.Proc()} {
		if p.StartTime == 0 {
			p.StartTime, _ = procmark.StartTime(p.Pid)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		select {
		case <-procmark.Watch(p):
		case <-wctx.Done():
			t.Errorf("process %d still runs after Stop of the re-attached VM", p.Pid)
		}
		cancel()
	}
	testenv.NoSockets(t, state)
}
