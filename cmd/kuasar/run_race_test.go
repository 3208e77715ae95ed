package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestRenameRaceAttackCLI is the rename-race mount escape through the CLI:
// two `kuasar run --dir SHARE:/data race.wasm ...` processes share one host
// directory; one swaps /data/d between a directory and a symlink to the
// host directory next to the share, the other opens /data/d/shadow and
// creates /data/d/pwned 20,000 times. The reader must never see the host
// file, and nothing outside the share may appear or change.
func TestRenameRaceAttackCLI(t *testing.T) {
	bin := binary(t)
	race := fixture(t, "race")
	parent := t.TempDir()
	share, secret := filepath.Join(parent, "share"), filepath.Join(parent, "secret")
	for _, d := range []string{share, secret} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	shadow := filepath.Join(secret, "shadow")
	const hostSecret = "HOST-SECRET-c41a"
	if err := os.WriteFile(shadow, []byte(hostSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(shadow)
	env := []string{"KUASAR_STATE_DIR=" + t.TempDir()}

	swapper := exec.Command(bin, "run", "--dir", share+":/data", race, "swap", "/data", "../secret", "120")
	swapper.Env = append(os.Environ(), env...)
	var swapOut strings.Builder
	swapper.Stdout, swapper.Stderr = &swapOut, &swapOut
	if err := swapper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		swapper.Process.Kill()
		swapper.Wait()
	}()

	r := runProcess(t, env, "", bin, "run", "--dir", share+":/data", race, "read", "/data", "20", "20000")
	swapper.Process.Kill()
	swapper.Wait()
	if r.code != 0 {
		t.Fatalf("reader exited %d: %s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "LEAK") || strings.Contains(r.stdout, hostSecret) {
		t.Errorf("the guest read the host file:\n%.2000s", r.stdout)
	}
	summary := regexp.MustCompile(`attempts=(\d+) leaks=(\d+) inside=(\d+)`).FindStringSubmatch(r.stdout)
	if summary == nil {
		t.Fatalf("no summary from the reader: %q (swapper: %q)", r.stdout, swapOut.String())
	}
	t.Logf("reader: %s", summary[0])
	if summary[2] != "0" {
		t.Errorf("leaks = %s", summary[2])
	}
	if summary[3] == "0" {
		t.Errorf("the reader never found /data/d/shadow inside the share: the race was not exercised (swapper: %q)", swapOut.String())
	}
	entries, _ := os.ReadDir(secret)
	if len(entries) != 1 {
		t.Errorf("outside the share: %d entries, want only shadow", len(entries))
	}
	after, _ := os.Stat(shadow)
	if b, _ := os.ReadFile(shadow); string(b) != hostSecret || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("the host file changed: %q", b)
	}
}
