package vmm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartAttachKill(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("/bin/sh", []string{"-c", "echo started; exec sleep 30"}, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	// The pid is watched only while its command line still matches.
	if _, err := Attach(p.Pid(), "no-such-marker", filepath.Join(dir, "log")); err == nil {
		t.Error("Attach accepted a process whose command line does not match (pid reuse guard)")
	}
	time.Sleep(100 * time.Millisecond) // let the shell exec sleep
	a, err := Attach(p.Pid(), "sleep", filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Exited() || p.Exited() {
		t.Fatal("reported exited while running")
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("Kill returned before the process was gone")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Wait(ctx); err != nil {
		t.Fatalf("attached watcher did not see the exit: %v", err)
	}
	if !strings.Contains(p.Tail(100), "started") {
		t.Errorf("log tail %q", p.Tail(100))
	}
	if p.ExitError() == nil {
		t.Error("killed process has no exit error")
	}
}

func TestListenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	os.WriteFile(path, nil, 0o644) // a stale file is replaced
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v %v: want a 0600 socket", fi, err)
	}
}
