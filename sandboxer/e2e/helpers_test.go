package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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

// logCompleteTimeout bounds the wait for containerd to finish an exited
// container's log file.
const logCompleteTimeout = 30 * time.Second

// waitLogComplete waits, polling with a deadline, until containerd has
// written the whole output of ctr into its CRI log file, when ctr has
// exited. CRI reports a container EXITED once its FIFOs are drained, but
// the bytes drained last may still sit with the goroutines that write them
// into the log file (containerd's internal/cri/io.NewCRILogger, one per
// stream); those close the file when they are done. So the log is complete
// once no fd of the containerd process refers to the log file any more. A
// container that has not exited has no complete log: it returns at once.
func waitLogComplete(e *testenv.Env, ctr string, timeout time.Duration) error {
	out, err := e.CrictlErr("inspect", "-o", "go-template", "--template", "{{.status.state}} {{.status.logPath}}", ctr)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", ctr, err)
	}
	state, logPath, _ := strings.Cut(strings.TrimSpace(out), " ")
	if state != "CONTAINER_EXITED" || logPath == "" {
		return nil
	}
	if p, err := filepath.EvalSymlinks(logPath); err == nil {
		logPath = p
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", e.Containerd.Pid())
	deadline := time.Now().Add(timeout)
	for {
		open, err := fdsOpenOn(fdDir, logPath)
		if err != nil {
			return err
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd still holds %d fds on the log %s of exited container %s after %s: its log writers did not finish", open, logPath, ctr, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fdsOpenOn counts the fds under fdDir (a /proc/PID/fd) that refer to path.
func fdsOpenOn(fdDir, path string) (int, error) {
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, fmt.Errorf("list containerd's fds: %w", err)
	}
	n := 0
	for _, en := range entries {
		// An fd closed since ReadDir has no link any more: not open.
		if l, err := os.Readlink(filepath.Join(fdDir, en.Name())); err == nil && l == path {
			n++
		}
	}
	return n, nil
}

// ctrLogs returns what crictl logs prints on its stdout for ctr (the
// container's stdout stream; crictl writes the stderr lines to its own
// stderr). The log of an exited container is read once it is complete
// (waitLogComplete).
func ctrLogs(t testing.TB, e *testenv.Env, ctr string) string {
	t.Helper()
	if err := waitLogComplete(e, ctr, logCompleteTimeout); err != nil {
		t.Fatal(err)
	}
	out, err := e.CrictlErr("logs", ctr)
	if err != nil {
		t.Fatalf("crictl logs %s: %v", ctr, err)
	}
	return strings.TrimSpace(out)
}

// crictlLogs returns both streams of a container's CRI log (crictl logs
// writes the container's stderr to its own stderr). The log of an exited
// container is read once it is complete (waitLogComplete); what a running
// container has logged so far otherwise.
func crictlLogs(t testing.TB, e *testenv.Env, ctr string) string {
	t.Helper()
	if err := waitLogComplete(e, ctr, logCompleteTimeout); err != nil {
		t.Fatal(err)
	}
	return crictlLogsNow(e, ctr)
}

// crictlLogsNow returns both streams of what the CRI log of ctr holds now.
func crictlLogsNow(e *testenv.Env, ctr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, e.Tools.Crictl, "--runtime-endpoint", "unix://"+e.ContainerdSock,
		"--image-endpoint", "unix://"+e.ContainerdSock, "--timeout", "60s", "logs", ctr).CombinedOutput()
	return string(out)
}
