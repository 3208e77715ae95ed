package wazero_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kuasar-go/kuasar/internal/fixtures"
	"github.com/kuasar-go/kuasar/wasm"
)

// raceSecret marks the host file outside the shared mount.
const raceSecret = "HOST-SECRET-b8e2"

// TestRenameRaceAttack runs the two guests of the rename-race mount escape
// (fixtures.Race) concurrently in one engine, sharing one writable mount:
// guest B swaps /data/d between a directory and a symlink leading out of the
// mount, guest A opens /data/d/shadow and creates /data/d/pwned 20,000
// times. A must never read the host file and nothing may be created or
// changed outside the mount. Before internal/fsroot, A read the host file
// within a few hundred attempts.
func TestRenameRaceAttack(t *testing.T) {
	e := newEngine(t)
	m := compile(t, e, fixtures.Race)
	tests := []struct {
		name   string
		target func(secret string) string // the symlink's target
	}{
		{"relative link", func(string) string { return "../secret" }},
		{"climbing to host path", func(secret string) string {
			return strings.Repeat("../", 12) + strings.TrimPrefix(secret, "/")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			share := filepath.Join(parent, "share")
			secret := filepath.Join(parent, "secret")
			target := tc.target(secret)
			for _, d := range []string{share, secret} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			shadow := filepath.Join(secret, "shadow")
			if err := os.WriteFile(shadow, []byte(raceSecret), 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(shadow)
			mounts := []wasm.Mount{{HostPath: share, GuestPath: "/data"}}

			swapCtx, stopSwap := context.WithCancel(context.Background())
			swapDone := make(chan result, 1)
			go func() {
				var r result
				r.code, r.err = m.Run(swapCtx, wasm.RunConfig{Args: []string{"race", "swap", "/data", target, "60"}, Mounts: mounts})
				swapDone <- r
			}()
			r := run(t, m, wasm.RunConfig{Args: []string{"race", "read", "/data", "20", "20000"}, Mounts: mounts})
			stopSwap()
			<-swapDone
			if r.err != nil || r.code != 0 {
				t.Fatalf("reader: code %d, err %v, stderr %q", r.code, r.err, r.stderr)
			}
			if strings.Contains(r.stdout, "LEAK") || strings.Contains(r.stdout, raceSecret) {
				t.Errorf("the guest read the host file:\n%.2000s", r.stdout)
			}
			stats := raceStats(t, r.stdout)
			t.Logf("%v", stats)
			if stats["leaks"] != 0 {
				t.Errorf("leaks = %d", stats["leaks"])
			}
			if stats["inside"] == 0 {
				t.Errorf("the reader never found /data/d/shadow inside the mount in %d attempts: the race was not exercised", stats["attempts"])
			}
			entries, _ := os.ReadDir(secret)
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("outside the mount: %v, want only shadow", names)
			}
			after, _ := os.Stat(shadow)
			if b, _ := os.ReadFile(shadow); string(b) != raceSecret || !after.ModTime().Equal(before.ModTime()) || after.Mode() != before.Mode() {
				t.Errorf("the host file changed: %q, %v %v", b, after.ModTime(), after.Mode())
			}
		})
	}
}

var raceSummary = regexp.MustCompile(`attempts=\d+( \w+=\d+)*`)

// raceStats parses the reader's last line, "attempts=N leaks=M ...".
func raceStats(t *testing.T, out string) map[string]int {
	t.Helper()
	line := raceSummary.FindString(out)
	if line == "" {
		t.Fatalf("no summary line in the reader's output %q", out)
	}
	stats := map[string]int{}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		stats[k], _ = strconv.Atoi(v)
	}
	return stats
}
