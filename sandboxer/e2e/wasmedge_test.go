//go:build wasmedge

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// These tests need kuasar-sandboxer built with -tags wasmedge: `make
// test-wasmedge` passes the `make wasmedge` build in $KUASAR_TEST_BIN.

// TestWasmEdgePodCRI runs the hello module on WasmEdge through containerd
// and crictl, the engine chosen by the pod annotation and, in a second
// sandboxer, by the runtime handler's wasm_engine; then a long-running
// container on WasmEdge is stopped by crictl (its child process killed).
func TestWasmEdgePodCRI(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    string
		podAnn map[string]string
	}{
		{name: "annotation", podAnn: map[string]string{"kuasar.io/wasm-engine": "wasmedge"}},
		{name: "handler", cfg: "[runtime_handlers.kuasar]\nisolation = \"wasm\"\nwasm_engine = \"wasmedge\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []testenv.EnvOption
			if tc.cfg != "" {
				opts = append(opts, testenv.WithSandboxerConfig(tc.cfg))
			}
			e := testenv.NewEnv(t, opts...)
			const ref = "docker.io/kuasar/hello-wasmedge:test"
			importWasm(t, e, fixtures.Hello, "hello.wasm", ref, false)
			podCfg := podJSON(t, e, "hello-wasmedge", tc.podAnn)
			pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
			t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
			ctr := e.Crictl("create", pod, ctrJSON(t, e, "hello", ref, []string{"a1"}, false), podCfg)
			e.Crictl("start", ctr)
			st := waitState(t, e, ctr, "CONTAINER_EXITED", 60*time.Second)
			if code, _ := st["exitCode"].(float64); code != 0 {
				t.Fatalf("exit code %v: %v", st["exitCode"], st)
			}
			logs := ctrLogs(t, e, ctr)
			if !strings.Contains(logs, fixtures.HelloGreeting) || !strings.Contains(logs, "a1") {
				t.Fatalf("logs %q lack %q and argv a1\ncontainerd log:\n%s", logs, fixtures.HelloGreeting, tail(e.Containerd.Output(), 20))
			}
			// The sandboxer says which engine ran it.
			if out := e.Sandboxer.Output(); !strings.Contains(out, "engine=wasmedge") {
				t.Errorf("the sandboxer log does not show the wasmedge engine being created:\n%s", tail(out, 20))
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

// TestWasmEdgeLongRunningStop: crictl stop of a WasmEdge container that
// sleeps ends it promptly, not with 0.
func TestWasmEdgeLongRunningStop(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-wasmedge:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)
	podCfg := podJSON(t, e, "idle-wasmedge", map[string]string{"kuasar.io/wasm-engine": "wasmedge", "kuasar.io/isolation": "wasm"})
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	t.Cleanup(func() { e.CrictlErr("rmp", "-f", pod) })
	sst, err := sandboxerClient(t, e).Status(context.Background(), &api.ControllerStatusRequest{SandboxID: pod, Verbose: true})
	if err != nil || sst.Info["backend"] != "wasm" {
		t.Fatalf("backend after runp: %v, %v", sst.GetInfo(), err)
	}
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "idle", ref, []string{"sleep", "3600"}, false), podCfg)
	e.Crictl("start", ctr)
	waitState(t, e, ctr, "CONTAINER_RUNNING", 30*time.Second)
	e.Crictl("stop", "--timeout", "5", ctr)
	st := waitState(t, e, ctr, "CONTAINER_EXITED", 20*time.Second)
	if code, _ := st["exitCode"].(float64); code == 0 {
		t.Fatalf("a stopped module must not exit 0: %v", st)
	}
	e.Crictl("rm", ctr)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
}

// TestWasmEdgeKill9Recovery kills the sandboxer with SIGKILL under a
// running WasmEdge container: the container's child process dies with it
// (PR_SET_PDEATHSIG), and the restarted sandboxer reports the pod exited
// 137 and removes it without leaving anything behind.
func TestWasmEdgeKill9Recovery(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-kill-wasmedge:test"
	importWasm(t, e, fixtures.WASI, "wasi.wasm", ref, false)
	podCfg := podJSON(t, e, "victim-wasmedge", map[string]string{"kuasar.io/wasm-engine": "wasmedge"})
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	ctr := e.Crictl("create", pod, ctrJSON(t, e, "victim", ref, []string{"sleep", "3600"}, false), podCfg)
	e.Crictl("start", ctr)
	waitState(t, e, ctr, "CONTAINER_RUNNING", 30*time.Second)
	// Only the engine's children: the sandboxer also starts the builder
	// of its default VM template at start, a QEMU that is not its
	// child's business (the restart reaps it by its mark).
	children := sameExeChildren(e.Sandboxer.Cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("the sandboxer runs no child process for the WasmEdge container")
	}

	e.Sandboxer.Kill9()
	deadline := time.Now().Add(20 * time.Second)
	for _, pid := range children {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("WasmEdge child %d outlived its SIGKILLed sandboxer", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	e.StartSandboxer()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The recovered instance's exit reaches the record through the
	// sandbox's watcher goroutine: poll until it has.
	for {
		st, err := sandboxerClient(t, e).Status(ctx, &api.ControllerStatusRequest{SandboxID: pod, Verbose: true})
		if err != nil {
			t.Fatalf("status after restart: %v\n%s", err, tail(e.Sandboxer.Output(), 30))
		}
		if st.State == "SANDBOX_NOTREADY" {
			if st.Info["exit_status"] != "137" {
				t.Fatalf("recovered status %+v, want exit status 137", st)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("recovered status %+v, want SANDBOX_NOTREADY", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitState(t, e, ctr, "CONTAINER_EXITED", 30*time.Second)
	if out, err := e.CrictlErr("rm", "-f", ctr); err != nil {
		t.Fatalf("rm: %s %v", out, err)
	}
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Fatalf("left after rmp: %v", dirs)
	}
}

// childPids lists the children of pid (of all its threads).
func childPids(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// sameExeChildren lists the children of pid that run pid's own executable:
// the WasmEdge engine's children re-execute the sandboxer binary.
func sameExeChildren(pid int) []int {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return nil
	}
	var out []int
	for _, c := range childPids(pid) {
		if ce, err := os.Readlink("/proc/" + strconv.Itoa(c) + "/exe"); err == nil && ce == exe {
			out = append(out, c)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
