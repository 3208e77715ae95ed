package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// importWasm builds the module as an image of the given shape and imports it.
func importWasm(t testing.TB, e *testenv.Env, module []byte, name, ref string, artifact bool) {
	t.Helper()
	build, platform := images.BuildWasmImage, "wasi/wasm"
	if artifact {
		build, platform = images.BuildWasmArtifact, "wasip1/wasm"
	}
	img, err := build(context.Background(), module, name)
	if err != nil {
		t.Fatal(err)
	}
	e.ImportImagePlatform(img, ref, platform)
}

// TestWasmPodCRI runs the hello module through CRI: runp, create, start, logs,
// inspect (exit code), stop, rmp; for both Wasm image shapes.
func TestWasmPodCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	for _, tc := range []struct {
		name     string
		artifact bool
		podAnn   map[string]string
	}{
		{"image", false, nil},
		{"artifact", true, nil},
		{"pod-annotation", false, map[string]string{"kuasar.io/isolation": "wasm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := "docker.io/kuasar/hello-" + tc.name + ":test"
			importWasm(t, e, fixtures.Hello, "hello.wasm", ref, tc.artifact)
			podCfg := podJSON(t, e, "hello-"+tc.name, tc.podAnn)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			// A failed case must not leave its pod to the next one's
			// checks (sandboxDirs).
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			// A pod that names its kind gets its backend at RunPodSandbox;
			// the others at their first container.
			sst, err := sandboxerClient(t, e).Status(context.Background(), &api.ControllerStatusRequest{SandboxID: pod, Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]string{true: "wasm", false: ""}[tc.podAnn != nil]; sst.Info["backend"] != want {
				t.Fatalf("backend after runp is %q, want %q", sst.Info["backend"], want)
			}
			ctr := e.Crictl("create", pod, ctrJSON(t, e, "hello", ref, []string{"a1"}, false), podCfg)
			e.Crictl("start", ctr)
			st := waitState(t, e, ctr, "CONTAINER_EXITED", 30*time.Second)
			if code, _ := st["exitCode"].(float64); code != 0 {
				t.Fatalf("exit code %v: %v", st["exitCode"], st)
			}
			logs := ctrLogs(t, e, ctr)
			if !strings.Contains(logs, fixtures.HelloGreeting) || !strings.Contains(logs, "a1") {
				t.Fatalf("logs %q lack %q and argv a1\ncontainerd log:\n%s", logs, fixtures.HelloGreeting, tail(e.Containerd.Output(), 20))
			}
			e.Crictl("rm", ctr)
			e.Crictl("stopp", pod)
			e.Crictl("rmp", pod)
			if dirs := sandboxDirs(e); len(dirs) != 0 {
				t.Fatalf("left after rmp: %v", dirs)
			}
		})
	}
}

// TestWasmLongRunningStop stops a module that blocks on stdin with crictl stop.
func TestWasmLongRunningStop(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)
	podCfg := podJSON(t, e, "idle", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "idle", ref, []string{"sleep", "3600"}, false), podCfg)
	e.Crictl("start", ctr)
	waitState(t, e, ctr, "CONTAINER_RUNNING", 10*time.Second)
	// Pod stats come from the sandboxer's Metrics (cgroup v2 shape).
	stats := e.Crictl("statsp", "-o", "json", "--id", pod)
	if !strings.Contains(stats, "workingSetBytes") || !strings.Contains(stats, "processCount") {
		t.Fatalf("crictl statsp has no memory or process figures: %s", stats)
	}
	if strings.Contains(stats, "18446744") {
		t.Fatalf("crictl statsp shows an underflowed figure (no memory limit must mean no available bytes): %s", stats)
	}
	// The SIGTERM must end the module blocked on stdin: exit 143, not the
	// SIGKILL (137) containerd sends once the grace period has passed. The
	// outcome tells, not a wall time, which load stretches.
	e.Crictl("stop", "--timeout", "30", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 60*time.Second)
	if code, _ := st["exitCode"].(float64); code != 143 {
		t.Fatalf("a module blocked on stdin exited %v on crictl stop, want 143 (ended by the SIGTERM, no SIGKILL after the grace period): %v", code, st)
	}
	e.Crictl("rm", ctr)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
}
