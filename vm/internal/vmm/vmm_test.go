package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
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

// TestPoll checks the three ways Poll ends: try succeeds, the process
// exits, ctx ends; and that giveUp gets try's last error.
func TestPoll(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("/bin/sh", []string{"-c", "exec sleep 30"}, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	errNotYet := errors.New("not yet")
	n := 0
	giveUp := func(exited bool, last error) error {
		return fmt.Errorf("exited=%v: %w", exited, last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Poll(ctx, p, time.Millisecond, func() error {
		if n++; n < 3 {
			return errNotYet
		}
		return nil
	}, giveUp); err != nil || n != 3 {
		t.Fatalf("Poll: %v after %d tries, want success after 3", err, n)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	err = Poll(short, p, time.Millisecond, func() error { return errNotYet }, giveUp)
	if err == nil || !errors.Is(err, errNotYet) || !strings.Contains(err.Error(), "exited=false") {
		t.Fatalf("Poll past the deadline: %v, want exited=false wrapping the last try error", err)
	}
	p.Kill()
	err = Poll(ctx, p, time.Hour, func() error { return errNotYet }, giveUp)
	if err == nil || !strings.Contains(err.Error(), "exited=true") {
		t.Fatalf("Poll on an exited process: %v, want exited=true", err)
	}
	var none *Process
	if err := Poll(ctx, none, time.Hour, func() error { return errNotYet }, giveUp); err == nil || !strings.Contains(err.Error(), "exited=true") {
		t.Fatalf("Poll on a nil process: %v, want exited=true", err)
	}
}

// TestQuit checks that Quit runs the quit function, returns once the
// process is gone, and does nothing for a nil or exited process.
func TestQuit(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("/bin/sh", []string{"-c", "exec sleep 30"}, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	called := 0
	Quit(context.Background(), p, 5*time.Second, func(context.Context) {
		called++
		syscall.Kill(p.Pid(), syscall.SIGTERM)
	})
	if called != 1 || !p.Exited() {
		t.Fatalf("quit called %d times, exited %v: want once, exited", called, p.Exited())
	}
	Quit(context.Background(), p, time.Second, func(context.Context) { called++ })
	var none *Process
	Quit(context.Background(), none, time.Second, func(context.Context) { called++ })
	if called != 1 {
		t.Errorf("quit called for an exited or nil process")
	}
	if none.Pid() != 0 || !none.Exited() || none.Wait(context.Background()) != nil || none.Tail(10) != "" {
		t.Error("a nil Process must have pid 0, count as exited, and wait at once")
	}
	none.Kill()
}

// TestWaitForFile checks the wait ends when the file appears, and names
// the program when it exits first.
func TestWaitForFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "ready")
	p, err := Start("/bin/sh", []string{"-c", "sleep 0.2; touch " + target + "; exec sleep 30"}, filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitForFile(ctx, p, "toucher", target); err != nil {
		t.Fatal(err)
	}
	q, err := Start("/bin/sh", []string{"-c", "echo giving up; exit 1"}, filepath.Join(dir, "log2"))
	if err != nil {
		t.Fatal(err)
	}
	err = WaitForFile(ctx, q, "quitter", filepath.Join(dir, "never"))
	if err == nil || !strings.Contains(err.Error(), "quitter exited: giving up") || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("error %v: want Unavailable naming the program and its log", err)
	}
}

// TestPrepare checks a second Start is refused and the state directory
// is created private.
func TestPrepare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "state")
	if err := Prepare(nil, "sb", dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir %v %v, want mode 0700", fi, err)
	}
	if err := Prepare(&Process{}, "sb", dir); !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), "vm sb already started") {
		t.Errorf("second start: %v, want AlreadyExists naming the VM", err)
	}
}
