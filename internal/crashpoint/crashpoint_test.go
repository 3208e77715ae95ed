package crashpoint

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string
		n    int64
	}{
		{"", "", 1},
		{"task.Create", "task.Create", 1},
		{"task.Create#3", "task.Create", 3},
		{"task.Create#0", "task.Create", 1},
		{"task.Create#x", "task.Create", 1},
	} {
		if name, n := parse(tc.in); name != tc.name || n != tc.n {
			t.Errorf("parse(%q) = %q, %d; want %q, %d", tc.in, name, n, tc.name, tc.n)
		}
	}
}

// TestHitKills runs this test binary with a crash point: it must die of
// SIGKILL at the second hit of the point, and not at other points.
func TestHitKills(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "1" {
		Hit("other")
		Hit("here")
		os.Stdout.WriteString("first hit passed\n")
		Hit("here")
		os.Stdout.WriteString("survived\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Env+"=here#2")
	out, err := cmd.Output()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v (%v), want SIGKILL; output %q", cmd.ProcessState, err, out)
	}
	if string(out) != "first hit passed\n" {
		t.Fatalf("child printed %q: want the first hit passed and nothing after the second", out)
	}
}
