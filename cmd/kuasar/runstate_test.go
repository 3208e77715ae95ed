package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// TestReapDeadRuns: of the run directories in a parent, only those whose
// recorded owner is gone (or that have no record) are reaped, the
// processes marked below them killed; a live run's, another user's and
// one with an unreadable record stay.
func TestReapDeadRuns(t *testing.T) {
	parent := t.TempDir()
	// A dead owner: a process identified while it ran, then ended.
	gone := exec.Command("sleep", "600")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	goneID, err := procmark.Identify(gone.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	gone.Process.Kill()
	gone.Wait()

	mk := func(name string, rec *procmark.Record, raw string) string {
		d := filepath.Join(parent, runPrefix+name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if rec != nil {
			r := *rec
			r.Owner = d
			if err := procmark.Write(filepath.Join(d, runOwnerName), r); err != nil {
				t.Fatal(err)
			}
		}
		if raw != "" {
			os.WriteFile(filepath.Join(d, runOwnerName), []byte(raw), 0o600)
		}
		return d
	}
	live, err := newRunDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	dead := mk("dead", &procmark.Record{Pid: goneID.Pid, StartTime: goneID.StartTime}, "")
	norec := mk("norecord", nil, "")
	garbage := mk("garbage", nil, "{not json")
	var other string
	if os.Geteuid() == 0 {
		other = mk("other", &procmark.Record{Pid: goneID.Pid, StartTime: goneID.StartTime}, "")
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	// The dead run's "VMM", marked with a directory below it.
	vmm := exec.Command("sleep", "600")
	vmm.Env = []string{procmark.Pair(filepath.Join(dead, "sandbox", "vm"))}
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() { vmm.Wait(); close(ended) }()
	t.Cleanup(func() { vmm.Process.Kill() })

	reaped, err := reapDeadRuns(context.Background(), parent)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{dead: true, norec: true}
	if len(reaped) != len(want) {
		t.Errorf("reaped %v, want %v", reaped, want)
	}
	for _, d := range reaped {
		if !want[d] {
			t.Errorf("reaped %s", d)
		}
	}
	for d := range want {
		if _, err := os.Lstat(d); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", d, err)
		}
	}
	for _, d := range []string{live, garbage, other} {
		if d == "" {
			continue
		}
		if _, err := os.Lstat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	// Reap waited for its exit; its parent (this test) reaps it.
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Error("the dead run's marked process still runs")
	}
}
