package stdio_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"

	"github.com/kuasar-go/kuasar/task/stdio"
)

// peer opens the client ends of three FIFOs as containerd's cio does.
func peer(t *testing.T) (cfg stdio.Config, in io.WriteCloser, out, errOut io.ReadCloser) {
	t.Helper()
	dir := t.TempDir()
	cfg = stdio.Config{Stdin: filepath.Join(dir, "in"), Stdout: filepath.Join(dir, "out"), Stderr: filepath.Join(dir, "err")}
	ctx := context.Background()
	var err error
	if in, err = fifo.OpenFifo(ctx, cfg.Stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err = fifo.OpenFifo(ctx, cfg.Stdout, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		t.Fatal(err)
	}
	if errOut, err = fifo.OpenFifo(ctx, cfg.Stderr, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); out.Close(); errOut.Close() })
	return cfg, in, out, errOut
}

func TestStreams(t *testing.T) {
	cfg, in, out, _ := peer(t)
	p, err := stdio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.Write([]byte("abc"))
	buf := make([]byte, 3)
	if _, err := io.ReadFull(p.Stdin, buf); err != nil || string(buf) != "abc" {
		t.Fatalf("stdin: %q %v", buf, err)
	}
	p.Stdout.Write([]byte("out"))
	got := make([]byte, 3)
	if _, err := io.ReadFull(out, got); err != nil || string(got) != "out" {
		t.Fatalf("stdout: %q %v", got, err)
	}

	// CloseStdin ends a blocked read with EOF.
	done := make(chan error, 1)
	go func() { _, err := p.Stdin.Read(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	p.CloseStdin()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Errorf("read after CloseStdin: %v, want EOF", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("CloseStdin did not unblock the reader")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := out.Read(got); n != 0 || err == nil {
		t.Errorf("stdout reader after Close: %d %v, want EOF", n, err)
	}
}

func TestAbortFailsBlockedRead(t *testing.T) {
	cfg, _, _, _ := peer(t)
	p, err := stdio.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	done := make(chan error, 1)
	go func() { _, err := p.Stdin.Read(make([]byte, 1)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	p.Abort()
	if err := <-done; err == nil || err == io.EOF {
		t.Errorf("read after Abort: %v, want an error other than EOF", err)
	}
}

func TestTerminalRefused(t *testing.T) {
	_, err := stdio.Open(context.Background(), stdio.Config{Terminal: true})
	if !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("terminal: %v", err)
	}
}

func fds(t *testing.T) int {
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

func TestMissingFifoLeavesNothingOpen(t *testing.T) {
	cfg, _, _, _ := peer(t)
	// A first open completes the peer's own pending opens.
	p, err := stdio.Open(context.Background(), stdio.Config{Stdout: cfg.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	time.Sleep(50 * time.Millisecond)
	cfg.Stderr = filepath.Join(t.TempDir(), "missing")
	before := fds(t)
	if _, err := stdio.Open(context.Background(), cfg); err == nil {
		t.Fatal("opened a missing FIFO")
	}
	time.Sleep(50 * time.Millisecond) // the fifo package opens on goroutines
	if after := fds(t); after != before {
		e, _ := os.ReadDir("/proc/self/fd")
		for _, x := range e {
			l, _ := os.Readlink("/proc/self/fd/" + x.Name())
			t.Log(x.Name(), l)
		}
		t.Errorf("%d file descriptors open before, %d after a failed Open", before, after)
	}
}

func TestLogURIs(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "logs", "c.log")
	p, err := stdio.Open(context.Background(), stdio.Config{Stdout: "file://" + log, Stderr: "file://" + log})
	if err != nil {
		t.Fatal(err)
	}
	p.Stdout.Write([]byte("one\n"))
	p.Stderr.Write([]byte("two\n"))
	p.Close()
	if b, _ := os.ReadFile(log); string(b) != "one\ntwo\n" {
		t.Errorf("log file %q", b)
	}
	_, err = stdio.Open(context.Background(), stdio.Config{Stdout: "binary:///usr/bin/logger?x=y"})
	if !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("binary://: %v", err)
	}
}
