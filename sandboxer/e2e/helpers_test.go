package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/testenv"
)

// podJSON writes a crictl pod config (host network: no CNI needed).
func podJSON(t testing.TB, e *testenv.Env, name string, annotations map[string]string) string {
	t.Helper()
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"log_directory": filepath.Join(e.Dir, "logs", name),
		"annotations":   annotations,
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"network": 2},
		}},
	}
	return writeJSON(t, e.Dir, "pod-"+name+".json", cfg)
}

// ctrJSON writes a crictl container config.
func ctrJSON(t testing.TB, e *testenv.Env, name, image string, args []string, stdin bool) string {
	t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"log_path": name + ".log",
		"stdin":    stdin,
	}
	if args != nil {
		cfg["args"] = args
	}
	return writeJSON(t, e.Dir, "ctr-"+name+".json", cfg)
}

// ctrCmdJSON writes a crictl container config whose command replaces the
// image's entrypoint.
func ctrCmdJSON(t testing.TB, e *testenv.Env, name, image string, command []string) string {
	t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"log_path": name + ".log",
	}
	if command != nil {
		cfg["command"] = command
	}
	return writeJSON(t, e.Dir, "ctr-"+name+".json", cfg)
}

func writeJSON(t testing.TB, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitState polls crictl inspect until the container reaches state.
func waitState(t testing.TB, e *testenv.Env, ctr, state string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		out := e.Crictl("inspect", ctr)
		var v struct {
			Status map[string]any `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("inspect output: %v\n%s", err, out)
		}
		last, _ = v.Status["state"].(string)
		if last == state {
			return v.Status
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("container %s is %s, not %s, after %s\nsandboxer log:\n%s", ctr, last, state, timeout, tail(e.Sandboxer.Output(), 40))
	return nil
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sandboxDirs lists the sandbox directories the sandboxer keeps.
func sandboxDirs(e *testenv.Env) []string {
	entries, _ := os.ReadDir(filepath.Join(e.SandboxerState, "sandboxes"))
	var ids []string
	for _, en := range entries {
		ids = append(ids, en.Name())
	}
	return ids
}
