package vmm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// TestStartRecordsAndMarks: a started process is recorded beside its log
// (pid and start time) and carries its owner's mark; a restarted sandboxer
// re-attaches it by the record (Reattach, Attach), refuses a pid whose
// start time differs, and kills it through its identity.
func TestStartRecordsAndMarks(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "virtiofsd.log")
	p, err := Start("/bin/sleep", []string{"600"}, logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	r, err := procmark.Read(filepath.Join(dir, "virtiofsd.proc"))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := procmark.StartTime(p.Pid())
	if r.Pid != p.Pid() || r.StartTime != st || r.Owner != dir || r.Path != "/bin/sleep" {
		t.Fatalf("record %+v; want pid %d start %d owner %s", r, p.Pid(), st, dir)
	}
	if owner, err := procmark.OwnerOf(p.Pid()); err != nil || owner != dir {
		t.Fatalf("mark of the process: %q %v; want %s", owner, err, dir)
	}

	a, err := Reattach(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if a.Exited() {
		t.Fatal("re-attached process reported exited")
	}
	if _, err := Attach(p.Pid(), "sleep", logPath); err != nil {
		t.Fatal(err)
	}
	// A record naming the pid with another start time (the pid was
	// reused by another process since): not ours.
	r.StartTime++
	if err := procmark.Write(RecordPath(logPath), r); err != nil {
		t.Fatal(err)
	}
	if _, err := Attach(p.Pid(), "sleep", logPath); !errdefs.IsNotFound(err) {
		t.Fatalf("Attach with a reused pid's record: %v; want NotFound", err)
	}
	if _, err := Reattach(logPath); !errdefs.IsNotFound(err) {
		t.Fatalf("Reattach with a reused pid's record: %v; want NotFound", err)
	}
	a.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("the process killed through its re-attached handle still runs: %v", err)
	}
	if err := a.Wait(ctx); err != nil {
		t.Fatalf("the re-attached handle did not see the exit: %v", err)
	}
}

// TestFailedStartLeavesNoRecord: the record written before the start goes
// when the start fails.
func TestFailedStartLeavesNoRecord(t *testing.T) {
	dir := t.TempDir()
	if _, err := Start(filepath.Join(dir, "no-such-vmm"), nil, filepath.Join(dir, "vmm.log")); err == nil {
		t.Fatal("started a missing binary")
	}
	if _, err := os.Stat(filepath.Join(dir, "vmm.proc")); !os.IsNotExist(err) {
		t.Fatalf("record left after a failed start: %v", err)
	}
}
