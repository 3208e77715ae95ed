package qemu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// TestVMMCannotSpawn plays a compromised QEMU that tries to run a program:
// over a second QMP monitor it is asked to migrate to "exec:" a shell that
// would leave a marker in its state directory (writable in its jail, with
// /bin/sh present). Its seccomp filter (-sandbox ...,spawn=deny) must kill
// it instead: QEMU is gone and the marker never appears.
func TestVMMCannotSpawn(t *testing.T) {
	testenv.RequireRoot(t)
	a := testenv.BusyboxInit(t, `/bin/busybox sleep 600`)
	state := t.TempDir()
	monitor := filepath.Join(state, "qmp2.sock")
	marker := filepath.Join(state, "spawned")
	v, err := qemu.New(vm.Spec{ID: "spawn", StateDir: state, Config: vm.Config{
		Path: testenv.QEMU(t), Kernel: a.Kernel, Initramfs: a.Initramfs, KernelParams: []string{"rdinit=/init"},
		ExtraArgs: []string{"-qmp", "unix:" + monitor + ",server=on,wait=off"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer v.Stop(context.Background(), time.Second)
	q, err := qemu.DialQMP(ctx, monitor)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// The reply may or may not arrive before QEMU dies.
	_, _ = q.Execute(ctx, "migrate", map[string]any{"uri": "exec:/bin/sh -c 'echo ran > " + marker + "'"})
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := v.Wait(wctx); err != nil {
		_, serr := os.Stat(marker)
		t.Fatalf("QEMU still runs after trying to spawn a program: %v (marker: %v)", err, serr)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spawned program ran (marker %v)", err)
	}
}
