package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// criMount is a CRI container mount (a hostPath or emptyDir as kubelet
// passes it: a bind of a host directory).
type criMount struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Readonly      bool   `json:"readonly,omitempty"`
}

// attackCtr is what the attack tests vary in a crictl container config.
type attackCtr struct {
	args   []string
	mounts []criMount
	// memLimit is linux.resources.memory_limit_in_bytes; 0 means none.
	memLimit int64
}

// attackCtrJSON writes a crictl container config with mounts and a memory
// limit.
func attackCtrJSON(t testing.TB, e *testenv.Env, name, ref string, c attackCtr) string {
	t.Helper()
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": ref},
		"log_path": name + ".log",
	}
	if c.args != nil {
		cfg["args"] = c.args
	}
	if c.mounts != nil {
		cfg["mounts"] = c.mounts
	}
	if c.memLimit > 0 {
		cfg["linux"] = map[string]any{"resources": map[string]any{"memory_limit_in_bytes": c.memLimit}}
	}
	return writeJSON(t, e.Dir, "ctr-"+name+".json", cfg)
}

// podJSONMemory writes a crictl pod config with a pod-wide memory limit
// (linux.resources, the sum kubelet computes from the containers' limits).
func podJSONMemory(t testing.TB, e *testenv.Env, name string, limit int64) string {
	t.Helper()
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"log_directory": filepath.Join(e.Dir, "logs", name),
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
			"resources":        map[string]any{"memory_limit_in_bytes": limit},
		},
	}
	return writeJSON(t, e.Dir, "pod-"+name+".json", cfg)
}

// fixture returns a committed fixture by name, failing t with the names it
// has when it is missing.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fixtures.Get(name)
	if err != nil {
		t.Fatalf("%v: the attack tests need the fixture built from internal/fixtures/src/%s.c", err, name)
	}
	return b
}

// containerState is the CRI state of ctr and its status map; errors are
// returned, not fatal, so that callers can poll through transient failures.
func containerState(e *testenv.Env, ctr string) (string, error) {
	out, err := e.CrictlErr("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctr)
	return strings.TrimSpace(out), err
}

// waitLogLine polls crictl logs of ctr until a line starting with prefix
// appears and returns that line. It fails t when the container exits
// without printing it or the deadline passes.
func waitLogLine(t testing.TB, e *testenv.Env, ctr, prefix string, timeout time.Duration) string {
	t.Helper()
	line, ok := logLineOrExit(t, e, ctr, prefix, timeout)
	if !ok {
		status, _ := e.CrictlErr("inspect", "-o", "go-template", "--template", "exit {{.status.exitCode}} reason {{.status.reason}} message {{.status.message}}", ctr)
		t.Fatalf("container %s exited (%s) without printing %q; logs:\n%s\nsandboxer log:\n%s", ctr, status, prefix, tail(crictlLogs(t, e, ctr), 20), tail(e.Sandboxer.Output(), 30))
	}
	return line
}

// logLineOrExit polls crictl logs of ctr until a line starting with prefix
// appears (the line, true) or the container exits without it ("", false).
// It fails t when neither happens before the deadline.
func logLineOrExit(t testing.TB, e *testenv.Env, ctr, prefix string, timeout time.Duration) (string, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		logs := crictlLogsNow(e, ctr)
		if line, ok := findLine(logs, prefix); ok {
			return line, true
		}
		st, _ := containerState(e, ctr)
		if st == "CONTAINER_EXITED" {
			// It may have printed the line just before exiting.
			line, ok := findLine(crictlLogs(t, e, ctr), prefix)
			return line, ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s (%s) printed no %q within %s; logs:\n%s\nsandboxer log:\n%s", ctr, st, prefix, timeout, tail(logs, 20), tail(e.Sandboxer.Output(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func findLine(logs, prefix string) (string, bool) {
	for _, line := range strings.Split(logs, "\n") {
		if strings.HasPrefix(line, prefix) {
			return line, true
		}
	}
	return "", false
}

// keyValues parses a line of space-separated key=value fields
// ("attempts=20000 leaks=0 ...").
func keyValues(line string) map[string]string {
	m := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, v, ok := strings.Cut(f, "="); ok {
			m[k] = v
		}
	}
	return m
}

// intField returns the integer field key of a key=value line, failing t when
// it is missing or not a number.
func intField(t testing.TB, kv map[string]string, key, line string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(kv[key], 10, 64)
	if err != nil {
		t.Fatalf("no integer %s= in %q", key, line)
	}
	return n
}

// runTenant runs one hello pod as another tenant would, through every CRI
// call (runp, create, start, logs, stopp, rmp), checks its output, and
// returns the first failure; each call has crictl's own deadline. The
// pod is removed whatever happens.
func runTenant(t testing.TB, e *testenv.Env, name, ref string) error {
	podCfg := podJSON(t, e, name, nil)
	pod, err := e.CrictlErr("runp", "--runtime", "kuasar", podCfg)
	if err != nil {
		return fmt.Errorf("runp: %w", err)
	}
	defer e.CrictlErr("rmp", "-f", pod)
	ctr, err := e.CrictlErr("create", pod, ctrJSON(t, e, name, ref, []string{"tenant"}, false), podCfg)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if _, err := e.CrictlErr("start", ctr); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := containerState(e, ctr)
		if err == nil && st == "CONTAINER_EXITED" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s is %q (%v) 60 s after start", ctr, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := waitLogComplete(e, ctr, logCompleteTimeout); err != nil {
		return err
	}
	logs, err := e.CrictlErr("logs", ctr)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	if !strings.Contains(logs, fixtures.HelloGreeting) || !strings.Contains(logs, "tenant") {
		status, _ := e.CrictlErr("inspect", "-o", "go-template", "--template", "exit {{.status.exitCode}} reason {{.status.reason}} message {{.status.message}}", ctr)
		return fmt.Errorf("logs %q lack %q and argv tenant (%s; stderr+stdout %q)", logs, fixtures.HelloGreeting, status, crictlLogsNow(e, ctr))
	}
	if _, err := e.CrictlErr("rm", ctr); err != nil {
		return fmt.Errorf("rm: %w", err)
	}
	if _, err := e.CrictlErr("stopp", pod); err != nil {
		return fmt.Errorf("stopp: %w", err)
	}
	if _, err := e.CrictlErr("rmp", pod); err != nil {
		return fmt.Errorf("rmp: %w", err)
	}
	return nil
}

// removePod stops and removes a pod and its containers and checks that the
// sandboxer keeps no directory or mount for it.
func removePod(t testing.TB, e *testenv.Env, pod string) {
	t.Helper()
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
	for _, d := range sandboxDirs(e) {
		if d == pod {
			t.Fatalf("sandbox directory of %s left after rmp", pod)
		}
	}
}

// checkNothingLeft fails t when the sandboxer keeps any sandbox directory or
// a mount under the test's directories.
func checkNothingLeft(t testing.TB, e *testenv.Env) {
	t.Helper()
	if dirs := sandboxDirs(e); len(dirs) != 0 {
		t.Errorf("sandbox dirs left: %v", dirs)
	}
	if m := append(testenv.MountsUnder(e.Dir), testenv.MountsUnder(e.SandboxerState)...); len(m) != 0 {
		t.Errorf("mounts left: %v", m)
	}
}

// procStatusBytes reads a "Key:  N kB" field of /proc/PID/status (VmRSS,
// VmHWM) in bytes, failing t when it is missing.
func procStatusBytes(t testing.TB, pid int, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				if err != nil {
					t.Fatalf("/proc/%d/status %s: %v", pid, key, err)
				}
				return kb << 10
			}
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, key)
	return 0
}

// resetPeakRSS resets the peak resident set (VmHWM) of pid to its current
// RSS (clear_refs 5), so that a later VmHWM is the peak of what followed.
func resetPeakRSS(t testing.TB, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatalf("reset peak RSS of %d: %v", pid, err)
	}
}

// treeSnapshot maps every path under root (relative) to its type, mode,
// modification time and, for regular files, the SHA-256 of its content, and
// for symlinks its target: equal snapshots mean nothing under root was
// written, created, removed or replaced.
func treeSnapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		// The modification time catches a rewrite with equal content and,
		// for directories, an entry created and removed again.
		desc := fi.Mode().String() + " " + fi.ModTime().UTC().Format(time.RFC3339Nano)
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		snap[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// diffSnapshots describes how after differs from before, or "" when equal.
func diffSnapshots(before, after map[string]string) string {
	var b strings.Builder
	for p, d := range before {
		if a, ok := after[p]; !ok {
			fmt.Fprintf(&b, "removed %s (%s)\n", p, d)
		} else if a != d {
			fmt.Fprintf(&b, "changed %s: %s -> %s\n", p, d, a)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			fmt.Fprintf(&b, "created %s (%s)\n", p, a)
		}
	}
	return b.String()
}
