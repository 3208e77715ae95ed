package vmm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// TestStartInNamespace: the process sees each bind's source at its
// target (read-only when asked), the host's target stays as it was, and
// a bind that cannot be made fails the start with no process and no
// record left.
func TestStartInNamespace(t *testing.T) {
	if !CanJail() {
		t.Skip("mount namespaces need root")
	}
	own, tpl, canon, canonTpl := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(tpl, "config.json"), []byte("snapshot"), 0o600)
	logPath := filepath.Join(own, "vmm.log")
	script := `cat ` + canonTpl + `/config.json > ` + canon + `/seen
echo evil > ` + canonTpl + `/config.json 2>/dev/null && echo wrote > ` + canon + `/ro-result || echo refused > ` + canon + `/ro-result`
	p, err := StartInNamespace("/bin/sh", []string{"-c", script}, logPath, []NSBind{
		{Source: own, Target: canon},
		{Source: tpl, Target: canonTpl, ReadOnly: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"seen": "snapshot", "ro-result": "refused\n"} {
		if b, err := os.ReadFile(filepath.Join(own, name)); err != nil || string(b) != want {
			log, _ := os.ReadFile(logPath)
			t.Errorf("%s in the process's own directory: %q (%v), want %q; log %s", name, b, err, want, log)
		}
	}
	if ents, _ := os.ReadDir(canon); len(ents) != 0 {
		t.Errorf("the host's %s got %d entries: the bind reached the host", canon, len(ents))
	}
	if b, _ := os.ReadFile(filepath.Join(tpl, "config.json")); string(b) != "snapshot" {
		t.Errorf("the read-only source changed: %q", b)
	}

	_, err = StartInNamespace("/bin/true", nil, logPath, []NSBind{{Source: filepath.Join(own, "missing"), Target: canon}})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("bind of a missing source: %v, want FailedPrecondition naming it", err)
	}
	if _, err := os.Stat(RecordPath(logPath)); !os.IsNotExist(err) {
		t.Errorf("record left after a failed start: %v", err)
	}
}
