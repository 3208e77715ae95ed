package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/testenv"
)

// TestBootBusybox boots the Debian kernel with a busybox /init that prints
// a marker and powers off: QEMU must exit by itself (-no-reboot), the
// marker must be in the console log and the sockets must be gone.
func TestBootBusybox(t *testing.T) {
	testenv.RequireRoot(t)
	a := testenv.BusyboxInit(t, `/bin/busybox mount -t proc proc /proc
echo "kuasar-boot-ok $(/bin/busybox uname -r)" > /dev/console
/bin/busybox poweroff -f`)
	state := t.TempDir()
	v, err := qemu.New(vm.Spec{ID: "boot", StateDir: state, Config: vm.Config{
		Path: testenv.QEMU(t), Kernel: a.Kernel, Initramfs: a.Initramfs, KernelParams: []string{"rdinit=/init"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer v.Stop(context.Background(), time.Second)
	if err := v.Health(ctx); err != nil {
		t.Fatalf("health right after start: %v", err)
	}
	if err := v.Wait(ctx); err != nil {
		b, _ := os.ReadFile(v.ConsoleLog())
		t.Fatalf("guest did not power off: %v; console:\n%s", err, b)
	}
	t.Logf("boot to poweroff: %v (accel %s)", time.Since(start), v.Accel())
	b, _ := os.ReadFile(v.ConsoleLog())
	if !strings.Contains(string(b), "kuasar-boot-ok "+a.KernelRelease) {
		t.Fatalf("console log lacks the marker with release %s:\n%s", a.KernelRelease, b)
	}
	if err := v.Stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{qemu.QMPSocketName, qemu.AgentSocketName} {
		if _, err := os.Stat(filepath.Join(state, s)); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind: %v", s, err)
		}
	}
}
