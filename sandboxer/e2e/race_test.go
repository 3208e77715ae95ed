package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/internal/testenv"
)

// TestRenameRaceAttackCRI is the rename-race mount escape through containerd
// and CRI: two containers of one Wasm pod share a host directory at /data
// (what a Kubernetes emptyDir is); one swaps /data/d between a directory and
// a symlink to the host directory next to the share, the other opens
// /data/d/shadow and creates /data/d/pwned 20,000 times. The reader must
// never see the host file and nothing outside the share may change.
func TestRenameRaceAttackCRI(t *testing.T) {
	e := testenv.NewEnv(t)
	const ref = "docker.io/kuasar/race:test"
	importWasm(t, e, fixtures.Race, "race.wasm", ref, false)

	parent := t.TempDir()
	share, secret := filepath.Join(parent, "share"), filepath.Join(parent, "secret")
	for _, d := range []string{share, secret} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const hostSecret = "HOST-SECRET-7d03"
	shadow := filepath.Join(secret, "shadow")
	if err := os.WriteFile(shadow, []byte(hostSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(shadow)

	podCfg := podJSON(t, e, "race", nil)
	pod := e.Crictl("runp", "--runtime", "kuasar", podCfg)
	container := func(name string, args []string) string {
		cfg := map[string]any{
			"metadata": map[string]any{"name": name},
			"image":    map[string]any{"image": ref},
			"log_path": name + ".log",
			"args":     args,
			"mounts":   []map[string]any{{"container_path": "/data", "host_path": share}},
		}
		return e.Crictl("create", pod, writeJSON(t, e.Dir, "ctr-"+name+".json", cfg), podCfg)
	}
	swapper := container("swapper", []string{"swap", "/data", "../secret", "300"})
	e.Crictl("start", swapper)
	waitState(t, e, swapper, "CONTAINER_RUNNING", 30*time.Second)
	reader := container("reader", []string{"read", "/data", "20", "20000"})
	e.Crictl("start", reader)
	waitState(t, e, reader, "CONTAINER_EXITED", 90*time.Second)
	logs := e.Crictl("logs", reader)
	e.Crictl("stop", "--timeout", "5", swapper)

	if strings.Contains(logs, "LEAK") || strings.Contains(logs, hostSecret) {
		t.Errorf("the reader read the host file:\n%s", tail(logs, 2000))
	}
	m := regexp.MustCompile(`attempts=(\d+) leaks=(\d+) inside=(\d+)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no summary in the reader's logs: %s (swapper: %s)", tail(logs, 2000), tail(e.Crictl("logs", swapper), 500))
	}
	t.Logf("reader: %s", m[0])
	if m[2] != "0" {
		t.Errorf("leaks = %s", m[2])
	}
	if m[3] == "0" {
		t.Errorf("the reader never found /data/d/shadow inside the share: the race was not exercised")
	}
	if entries, _ := os.ReadDir(secret); len(entries) != 1 {
		t.Errorf("outside the share: %d entries, want only shadow", len(entries))
	}
	after, _ := os.Stat(shadow)
	if b, _ := os.ReadFile(shadow); string(b) != hostSecret || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the host file changed: %q", b)
	}
	e.Crictl("rm", reader)
	e.Crictl("rm", swapper)
	e.Crictl("stopp", pod)
	e.Crictl("rmp", pod)
}
