package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestRuncBaseline runs busybox echo through the stock runc handler of the
// same containerd: the baseline the kuasar handler is compared with.
func TestRuncBaseline(t *testing.T) {
	e := testenv.NewEnv(t)
	e.RequireRuncShim()
	e.ImportPause()
	e.ImportImage(testenv.BusyboxImage(t, []string{"/bin/echo"}), "docker.io/library/busybox-echo:test")
	pod := e.Crictl("runp", "--runtime", "runc", podJSON(t, e, "runcpod", nil))
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "echo", "docker.io/library/busybox-echo:test", []string{"hello from runc"}, false), podJSON(t, e, "runcpod", nil))
	e.Crictl("start", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 30*time.Second)
	if code, _ := st["exitCode"].(float64); code != 0 {
		t.Fatalf("exit code %v", st["exitCode"])
	}
	if out := ctrLogs(t, e, ctr); !strings.Contains(out, "hello from runc") {
		t.Fatalf("logs: %q", out)
	}
	e.Crictl("rm", ctr)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
}

// TestKuasarPodWithoutContainers checks that a kuasar pod goes through
// containerd's sandbox lifecycle and that removing it leaves nothing in the
// sandboxer's state directory.
func TestKuasarPodWithoutContainers(t *testing.T) {
	e := testenv.NewEnv(t)
	pod := e.Crictl("runp", "--runtime", "kuasar", podJSON(t, e, "empty", nil))
	out := e.Crictl("inspectp", pod)
	if !strings.Contains(out, "SANDBOX_READY") {
		t.Fatalf("inspectp: %s", out)
	}
	if dirs := sandboxDirs(e); len(dirs) != 1 || dirs[0] != pod {
		t.Fatalf("sandbox dirs %v, want [%s]", dirs, pod)
	}
	// The runtime handler reaches the sandboxer (from CRI's sandbox
	// metadata), so that [runtime_handlers.NAME] defaults can apply.
	vmPod := e.Crictl("runp", "--runtime", "kuasar-vm", podJSON(t, e, "emptyvm", nil))
	for id, want := range map[string]string{pod: "kuasar", vmPod: "kuasar-vm"} {
		st, err := sandboxerClient(t, e).Status(context.Background(), &api.ControllerStatusRequest{SandboxID: id, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.Info["handler"] != want || st.Address == "" || st.Version != 3 {
			t.Fatalf("status of %s pod: %+v", want, st)
		}
	}
	e.Crictl("stopp", vmPod)
	e.Crictl("rmp", vmPod)
	e.Crictl("stopp", pod)
	if out := e.Crictl("inspectp", pod); !strings.Contains(out, "SANDBOX_NOTREADY") {
		t.Fatalf("inspectp after stopp: %s", out)
	}
	e.Crictl("rmp", pod)
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after rmp: %v\n%s", dirs, tail(e.Sandboxer.Output(), 30))
	}
}
