package guestinit

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

func TestReaperRoutesExitStatus(t *testing.T) {
	r := GlobalReaper(context.Background())
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -TERM $$", 128 + 15},
		{"kill -KILL $$", 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.script, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", tc.script)
			pid, ch, err := r.Start(func() (int, error) {
				if err := cmd.Start(); err != nil {
					return 0, err
				}
				return cmd.Process.Pid, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			select {
			case e := <-ch:
				if e.Pid != pid || e.Status != tc.want || e.At.IsZero() {
					t.Fatalf("exit = %+v, want pid %d status %d", e, pid, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("exit not delivered")
			}
		})
	}
}

func TestReaperStartError(t *testing.T) {
	r := GlobalReaper(context.Background())
	cmd := exec.Command("/nonexistent/binary")
	if _, _, err := r.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}); err == nil {
		t.Fatal("start of a missing binary succeeded")
	}
}
