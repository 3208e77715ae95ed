package procmark

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestParseStartTime(t *testing.T) {
	// 52 fields as in Linux 6.x; field 22 is 777.
	rest := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50"
	for _, tc := range []struct {
		name, line string
		want       uint64
		ok         bool
	}{
		{"plain", "42 (qemu-system-x86)" + rest, 777, true},
		{"spaces and parentheses in the name", "42 (a b) c) (d)" + rest, 777, true},
		{"no name", "42 qemu" + rest, 0, false},
		{"truncated", "42 (qemu) S 1 2 3", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tc.line))
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseStartTime = %d, %v; want %d (ok %v)", got, err, tc.want, tc.ok)
			}
		})
	}
}

// child starts sleep with env and returns it and a channel of its end.
func child(t *testing.T, env []string) (*exec.Cmd, <-chan *os.ProcessState) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan *os.ProcessState, 1)
	go func() { cmd.Wait(); done <- cmd.ProcessState }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, done
}

func ended(done <-chan *os.ProcessState, d time.Duration) bool {
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestScanAndKill: Scan finds the processes marked under a directory and
// only those; Kill kills the one its identity names, never a process whose
// start time or mark differ (a reused pid), and waits until it is gone.
func TestScanAndKill(t *testing.T) {
	dir := t.TempDir()
	owner := filepath.Join(dir, "b", "x", "vm")
	marked, markedDone := child(t, []string{Pair(owner)})
	_, otherDone := child(t, []string{Pair(dir + "-other/vm")})
	_, plainDone := child(t, nil)

	procs, err := Scan(filepath.Join(dir, "b"))
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 1 || procs[0].Pid != marked.Process.Pid || procs[0].Owner != owner {
		t.Fatalf("Scan = %+v; want only pid %d owned by %s", procs, marked.Process.Pid, owner)
	}
	p := procs[0]
	for _, wrong := range []Proc{
		{Pid: p.Pid, StartTime: p.StartTime + 1, Owner: p.Owner}, // a reused pid
		{Pid: p.Pid, StartTime: p.StartTime, Owner: owner + "x"}, // another owner's mark
	} {
		if err := Kill(wrong); err != nil {
			t.Fatal(err)
		}
		if ended(markedDone, 0) || !Alive(p) {
			t.Fatalf("Kill(%+v) killed process %+v", wrong, p)
		}
	}
	if err := Kill(p); err != nil {
		t.Fatal(err)
	}
	if !ended(markedDone, 5*time.Second) {
		t.Fatal("Kill returned and the process still runs")
	}
	if err := Kill(p); err != nil {
		t.Fatalf("Kill of a process already gone: %v", err)
	}
	if ended(otherDone, 0) || ended(plainDone, 0) {
		t.Fatal("a process not marked under the directory was killed")
	}
}

func TestWatch(t *testing.T) {
	cmd, _ := child(t, nil)
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := Proc{Pid: cmd.Process.Pid, StartTime: st}
	gone := Watch(p)
	select {
	case <-gone:
		t.Fatal("Watch reports a running process gone")
	default:
	}
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not report the process's exit")
	}
	select {
	case <-Watch(Proc{Pid: cmd.Process.Pid, StartTime: st + 1}):
	default:
		t.Fatal("Watch of a pid with another start time must report it gone at once")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vmm"+RecordExt)
	if _, err := Read(p); !errdefs.IsNotFound(err) {
		t.Fatalf("Read of a missing record: %v; want NotFound", err)
	}
	want := Record{Owner: "/o", Path: "/usr/bin/qemu", Pid: 7, StartTime: 9}
	if err := Write(p, want); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(p); err != nil || got != want {
		t.Fatalf("Read = %+v, %v; want %+v", got, err, want)
	}
	os.WriteFile(p, []byte("{"), 0o600)
	if _, err := Read(p); !errdefs.IsDataLoss(err) {
		t.Fatalf("Read of a torn record: %v; want DataLoss", err)
	}
}

// TestNow: Now is on the clock of StartTime: this process started before
// it, a process started after it did not start before.
func TestNow(t *testing.T) {
	self, err := StartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	now := Now()
	if self > now {
		t.Fatalf("this process started at tick %d, after Now %d", self, now)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if st < now {
		t.Fatalf("a process started after Now (%d) has start time %d", now, st)
	}
}
