package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/testenv"
	"github.com/kuasar-go/kuasar/vm/guest"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// qemuConfig builds (or reuses) the guest kernel and initramfs and returns a
// sandboxer configuration fragment pointing [hypervisor.qemu] at them.
func qemuConfig(t testing.TB) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found: apt-get install qemu-system-x86 (make deps): %v", err)
	}
	cache := testenv.ToolsDir() + "/guest"
	a, err := guest.Build(context.Background(), guest.Options{BaseDir: cache + "/builds", CacheDir: cache, SourceDir: testenv.RepoRoot()})
	if err != nil {
		t.Fatalf("guest build (make deps / make guest): %v", err)
	}
	return fmt.Sprintf("[hypervisor.qemu]\npath = %q\nkernel = %q\ninitramfs = %q\n", qemu, a.Kernel, a.Initramfs)
}

// TestVMPodCRI drives a pod annotated kuasar.io/isolation: vm through
// containerd's CRI with crictl: the VM boots at runp; a busybox container's
// output (the guest kernel's release, not the host's) and non-zero exit code
// come back; a long-running container takes an exec, then crictl stop; the
// pod is removed with nothing left behind (no QEMU, no state directories).
func TestVMPodCRI(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(qemuConfig(t)))
	templates := removeTemplates(t, e)
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh", "-c"}), "docker.io/library/busybox-sh:vm")
	podCfg := podJSON(t, e, "vmannotated", map[string]string{"kuasar.io/isolation": "vm"})
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)

	once := e.Crictl("create", pod, ctrJSON(t, e, "once", "docker.io/library/busybox-sh:vm", []string{"uname -r; echo out-from-vm; exit 7"}, false), podCfg)
	e.Crictl("start", once)
	st := waitState(t, e, once, "CONTAINER_EXITED", 90*time.Second)
	if code, _ := st["exitCode"].(float64); code != 7 {
		t.Fatalf("exit code %v, want 7: %v", st["exitCode"], st)
	}
	logs := ctrLogs(t, e, once)
	if !strings.Contains(logs, "out-from-vm") {
		t.Fatalf("logs %q lack the container's output", logs)
	}
	var host unix.Utsname
	if err := unix.Uname(&host); err != nil {
		t.Fatal(err)
	}
	guestRelease := strings.TrimSpace(strings.SplitN(logs, "\n", 2)[0])
	if guestRelease == "" || guestRelease == unix.ByteSliceToString(host.Release[:]) {
		t.Fatalf("first log line %q should be the guest kernel's release, not the host's", guestRelease)
	}
	e.Crictl("rm", once)
	// The pod's VM came from a VM template (template = "auto", default
	// sizes), built when the sandboxer started or at its runp.
	if n := len(templates.Templates()); n != 1 || !strings.Contains(e.Sandboxer.Output(), "vm: template built") {
		t.Fatalf("%d VM templates in the sandboxer's state, want the one its runp built", n)
	}

	checkQEMUConfined(t, e.SandboxerState)

	long := e.Crictl("create", pod, ctrJSON(t, e, "long", "docker.io/library/busybox-sh:vm", []string{"sleep 600"}, false), podCfg)
	e.Crictl("start", long)
	waitState(t, e, long, "CONTAINER_RUNNING", 60*time.Second)
	if out := e.Crictl("exec", long, "/bin/echo", "exec-ok"); !strings.Contains(out, "exec-ok") {
		t.Fatalf("exec output %q", out)
	}
	e.Crictl("stop", "--timeout", "1", long)
	st = waitState(t, e, long, "CONTAINER_EXITED", 60*time.Second)
	if code, _ := st["exitCode"].(float64); code != 137 && code != 143 {
		t.Fatalf("stopped container exit code %v, want 137 or 143", st["exitCode"])
	}
	e.Crictl("rm", long)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after rmp: %v", dirs)
	}
	if pids := podQEMUs(t, e.SandboxerState); len(pids) != 0 {
		t.Fatalf("hypervisor processes left: %v", pids)
	}
}

// TestLinuxImageRoutesToVM runs a busybox (Linux) image in a kuasar pod that
// names no isolation: the sandboxer reads the image's metadata from
// containerd at the first container, picks the "vm" backend, and the echo
// runs in a QEMU micro-VM. Needs qemu-system-x86 and the guest build (make deps).
func TestLinuxImageRoutesToVM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(qemuConfig(t)))
	removeTemplates(t, e)
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/echo"}), "docker.io/library/busybox-echo:vm")
	podCfg := podJSON(t, e, "vmpod", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "echo", "docker.io/library/busybox-echo:vm", []string{"hello from the vm"}, false), podCfg)
	e.Crictl("start", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 90*time.Second)
	if code, _ := st["exitCode"].(float64); code != 0 {
		t.Fatalf("exit code %v: %v", st["exitCode"], st)
	}
	if logs := ctrLogs(t, e, ctr); !strings.Contains(logs, "hello from the vm") {
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
	if pids := podQEMUs(t, e.SandboxerState); len(pids) != 0 {
		t.Fatalf("hypervisor processes left: %v", pids)
	}
}

// removeTemplates returns the VM backend's view of the sandboxer's VM
// templates and removes them (memory files on /dev/shm included) when the
// test ends.
func removeTemplates(t *testing.T, e *testenv.Env) *vmbackend.Backend {
	b, err := vmbackend.New(context.Background(), vmbackend.WithTemplateDir(filepath.Join(e.SandboxerState, "vm-templates")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.RemoveTemplates(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return b
}

// checkQEMUConfined checks the running pod's QEMU (the one whose command
// line names the sandboxer's state directory): its seccomp filter is in
// force, no_new_privs is set, it does not run as root and it holds only
// the 9p rootfs mode's capabilities (docs/vm.md, "Confinement of the
// VMM"; vm/vmbackend TestVMMConfined checks the rest).
func checkQEMUConfined(t *testing.T, state string) {
	t.Helper()
	pids := podQEMUs(t, state)
	if len(pids) != 1 {
		t.Fatalf("qemu processes of the pod: %q, want one", pids)
	}
	b, err := os.ReadFile("/proc/" + pids[0] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	st := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{"Seccomp": "2", "NoNewPrivs": "1", "CapEff": "000000000000001b", "CapBnd": "000000000000001b"} {
		if st[k] != want {
			t.Errorf("pod's qemu %s: %s %q, want %q", pids[0], k, st[k], want)
		}
	}
	if uid := strings.Fields(st["Uid"]); len(uid) == 0 || uid[0] == "0" {
		t.Errorf("pod's qemu runs as uid %q, want its own non-root uid", st["Uid"])
	}
}

// podQEMUs lists the QEMU processes of the sandboxer with state directory
// state that run pods: the idle clones of its warm pool (template_pool,
// -name kuasar-p-...) are the sandboxer's until it stops, not a pod's.
func podQEMUs(t *testing.T, state string) []string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+state).Output()
	var pids []string
	for _, pid := range strings.Fields(string(out)) {
		cmd, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil || strings.Contains(string(cmd), "-name\x00kuasar-p-") {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
