package wasmtask_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

func writeConfig(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, _ := json.Marshal(v)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func criState(t *testing.T, e *testenv.Env, ctr, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var v struct {
			Status map[string]any `json:"status"`
		}
		if err := json.Unmarshal([]byte(e.Crictl("inspect", ctr)), &v); err != nil {
			t.Fatal(err)
		}
		if v.Status["state"] == want {
			return v.Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %v, not %s", ctr, v.Status["state"], want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCRIExecStatsStop drives the Wasm task service through kubelet's API
// (crictl → containerd CRI → kuasar-sandboxer → wasm backend): exec of
// another mode of the module, exec of a missing module, stats decoded by
// CRI, stop with SIGTERM.
func TestCRIExecStatsStop(t *testing.T) {
	requireRoot(t)
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/wasi-task:test"
	img, err := images.BuildWasmImage(context.Background(), fixtures.WASI, "wasi.wasm")
	if err != nil {
		t.Fatal(err)
	}
	e.ImportImagePlatform(img, ref, "wasi/wasm")
	pod := writeConfig(t, e.Dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "wt", "namespace": "default", "uid": "wt-uid"},
		"log_directory": filepath.Join(e.Dir, "logs"),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	ctrCfg := writeConfig(t, e.Dir, "ctr.json", map[string]any{
		"metadata": map[string]any{"name": "sleeper"},
		"image":    map[string]any{"image": ref},
		"log_path": "sleeper.log",
		"args":     []string{"sleep", "3600"},
	})
	podID := e.Crictl("runp", "--runtime", "kuasar", pod)
	ctr := e.Crictl("create", podID, ctrCfg, pod)
	e.Crictl("start", ctr)
	criState(t, e, ctr, "CONTAINER_RUNNING")

	if out := e.Crictl("exec", ctr, "/wasi.wasm", "args", "x"); out != "/wasi.wasm\nargs\nx" {
		t.Errorf("exec output %q", out)
	}
	if _, err := e.CrictlErr("exec", ctr, "/nope.wasm"); err == nil || !strings.Contains(err.Error(), `Wasm module \"/nope.wasm\" does not exist`) {
		t.Errorf("exec of a missing module: %v", err)
	}

	var stats struct {
		Stats []struct {
			Memory *struct {
				UsageBytes *struct{ Value string } `json:"usageBytes"`
			} `json:"memory"`
			CPU *struct {
				UsageCoreNanoSeconds *struct{ Value string } `json:"usageCoreNanoSeconds"`
			} `json:"cpu"`
		} `json:"stats"`
	}
	out := e.Crictl("stats", "-o", "json", "--id", ctr)
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	if len(stats.Stats) != 1 || stats.Stats[0].Memory == nil || stats.Stats[0].Memory.UsageBytes == nil || stats.Stats[0].CPU == nil {
		t.Errorf("CRI did not decode the task's stats: %s", out)
	}

	e.Crictl("stop", "--timeout", "5", ctr)
	st := criState(t, e, ctr, "CONTAINER_EXITED")
	if code, _ := st["exitCode"].(float64); code != 143 {
		t.Errorf("exit code after crictl stop: %v, want 143 (SIGTERM)", st["exitCode"])
	}
	e.Crictl("rm", ctr)
	e.Crictl("stopp", podID)
	e.Crictl("rmp", podID)
	if m := testenv.MountsUnder(e.Dir); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
}
