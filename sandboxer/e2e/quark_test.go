package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

// standinQuark builds the STAND-IN quark (quark/internal/standin: not Quark,
// which cannot be obtained here; it honours Quark's sandbox command line and
// serves the Task API v2 by running containers with runc) and returns the
// sandboxer configuration that uses it.
func standinQuark(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("the stand-in quark runs containers with runc: apt-get install runc")
	}
	dir := testenv.TempDir(t)
	bin := filepath.Join(dir, "quark")
	cmd := exec.Command("go", "build", "-o", bin, "./quark/internal/standin")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in quark: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "quark-config.json")
	if err := os.WriteFile(cfg, []byte(`{"Sandboxed": true, "ShimMode": false}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("Quark pods run on the STAND-IN quark %s (Quark itself cannot be obtained on this machine)", bin)
	return fmt.Sprintf("[quark]\nbinary = %q\nconfig_file = %q\n", bin, cfg)
}

// TestQuarkPodCRI drives a pod annotated kuasar.io/isolation: quark through
// containerd's CRI with crictl, on the stand-in quark: the sandboxer runs
// the quark sandbox command at runp and bridges containerd's Task API v3 to
// the v2 the stand-in serves; a busybox container's output and exit code
// come back; a long-running one takes an exec and crictl stop; the pod is
// removed with nothing left (no quark process, no state directory).
func TestQuarkPodCRI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs containerd, the sandboxer and runc")
	}
	testenv.RequireRoot(t)
	e := testenv.NewEnv(t, testenv.WithSandboxerConfig(standinQuark(t)))
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/sh", "-c"}), "docker.io/library/busybox-sh:quark")
	podCfg := podJSON(t, e, "quarkpod", map[string]string{"kuasar.io/isolation": "quark"})
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	if !strings.Contains(e.Sandboxer.Output(), "quark: sandbox started") {
		t.Fatalf("the pod did not start on the quark backend:\n%s", tail(e.Sandboxer.Output(), 30))
	}
	quarkPid := quarkSandboxPid(t, e.SandboxerState)

	once := e.Crictl("create", pod, ctrJSON(t, e, "once", "docker.io/library/busybox-sh:quark", []string{"echo out-from-quark; exit 7"}, false), podCfg)
	e.Crictl("start", once)
	st := waitState(t, e, once, "CONTAINER_EXITED", 60*time.Second)
	if code, _ := st["exitCode"].(float64); code != 7 {
		t.Fatalf("exit code %v, want 7: %v\n%s", st["exitCode"], st, tail(e.Sandboxer.Output(), 30))
	}
	if logs := ctrLogs(t, e, once); !strings.Contains(logs, "out-from-quark") {
		t.Fatalf("logs %q lack the container's output", logs)
	}
	e.Crictl("rm", once)

	long := e.Crictl("create", pod, ctrJSON(t, e, "long", "docker.io/library/busybox-sh:quark", []string{"sleep 600"}, false), podCfg)
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
	if ms := testenv.MountsUnder(e.SandboxerState); len(ms) != 0 {
		t.Fatalf("mounts left after rmp: %v", ms)
	}
	{
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(quarkPid) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
			t.Fatalf("the quark sandbox process %d still runs after rmp", quarkPid)
		}
	}
}

// quarkSandboxPid reads the pid file the quark command wrote, in the one
// backend directory under state that holds a quark task socket.
func quarkSandboxPid(t *testing.T, state string) int {
	t.Helper()
	var pids []int
	filepath.WalkDir(state, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "quark-task.sock" {
			b, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "pid"))
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if len(pids) != 1 {
		t.Fatalf("quark sandbox pids under %s: %v, want one", state, pids)
	}
	return pids[0]
}
