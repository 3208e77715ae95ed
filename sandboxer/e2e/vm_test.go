package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/guest"
)

// TestLinuxImageRoutesToVM runs a busybox (Linux) image in a kuasar pod that
// names no isolation: the sandboxer reads the image's metadata from
// containerd at the first container, picks the "vm" backend, and the echo
// runs in a QEMU micro-VM. Needs qemu-system-x86 and the guest build (make deps).
func TestLinuxImageRoutesToVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	testenv.RequireRoot(t)
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found: apt-get install qemu-system-x86 (make deps): %v", err)
	}
	cache := testenv.ToolsDir() + "/guest"
	a, err := guest.Build(context.Background(), guest.Options{BaseDir: cache + "/builds", CacheDir: cache, SourceDir: testenv.RepoRoot()})
	if err != nil {
		t.Fatalf("guest build (make deps / make guest): %v", err)
	}
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(fmt.Sprintf(`[hypervisor.qemu]
path = %q
kernel = %q
initramfs = %q
`, qemu, a.Kernel, a.Initramfs)))
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/echo"}), "docker.io/library/busybox-echo:vm")
	podCfg := podJSON(t, e, "vmpod", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "echo", "docker.io/library/busybox-echo:vm", []string{"hello from the vm"}, false), podCfg)
	e.Crictl("start", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 90*time.Second)
	if code, _ := st["exitCode"].(float64); code != 0 {
		t.Fatalf("exit code %v: %v", st["exitCode"], st)
	}
	if logs := e.Crictl("logs", ctr); !strings.Contains(logs, "hello from the vm") {
		t.Fatalf("logs %q", logs)
	}
	info := e.Crictl("inspectp", pod)
	e.Crictl("rm", ctr)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
	if !strings.Contains(e.Sandboxer.Output(), "isolation=vm") {
		t.Fatalf("sandbox was not routed to vm:\n%s\n%s", info, tail(e.Sandboxer.Output(), 30))
	}
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after rmp: %v", dirs)
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu.*"+e.SandboxerState).Output(); len(out) != 0 {
		t.Fatalf("hypervisor processes left: %s", out)
	}
}
