package stdio_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	cfg, _, out, _ := peer(t)
	// A first open completes the peer's own pending open of stdout (on a
	// goroutine of the fifo package): done once the peer reads from it.
	p, err := stdio.Open(context.Background(), stdio.Config{Stdout: cfg.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stdout.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	p.Close()
	cfg.Stderr = filepath.Join(t.TempDir(), "missing")
	before := fds(t)
	if _, err := stdio.Open(context.Background(), cfg); err == nil {
		t.Fatal("opened a missing FIFO")
	}
	// The fifo package opens and closes on goroutines: poll, with a
	// deadline, until the count is back (a leak never is).
	after := fds(t)
	for deadline := time.Now().Add(10 * time.Second); after != before && time.Now().Before(deadline); after = fds(t) {
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if after != before {
		e, _ := os.ReadDir("/proc/self/fd")
		for _, x := range e {
			l, _ := os.Readlink("/proc/self/fd/" + x.Name())
			t.Log(x.Name(), l)
		}
		t.Errorf("%d file descriptors open before, %d 10 s after a failed Open", before, after)
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

// TestOpenTargets opens each form of stream target containerd or a CLI may
// name, writes through it and checks where the bytes went.
func TestOpenTargets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		// target returns the target and a function returning what
		// arrived once the writer is closed.
		target func(t *testing.T, dir string) (string, func() string)
	}{
		{"fifo path", func(t *testing.T, dir string) (string, func() string) {
			p := filepath.Join(dir, "out")
			r, err := fifo.OpenFifo(ctx, p, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return p, func() string { b, _ := io.ReadAll(r); return string(b) }
		}},
		{"fifo URI", func(t *testing.T, dir string) (string, func() string) {
			p := filepath.Join(dir, "out")
			r, err := fifo.OpenFifo(ctx, p, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return "fifo://" + p, func() string { b, _ := io.ReadAll(r); return string(b) }
		}},
		{"file URI creates and appends", func(t *testing.T, dir string) (string, func() string) {
			p := filepath.Join(dir, "logs", "ctr.log")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return "file://" + p, func() string { b, _ := os.ReadFile(p); return string(b) }
		}},
		{"file URI in a new directory", func(t *testing.T, dir string) (string, func() string) {
			p := filepath.Join(dir, "new", "ctr.log")
			return "file://" + p, func() string { b, _ := os.ReadFile(p); return "old\n" + string(b) }
		}},
		{"regular file path", func(t *testing.T, dir string) (string, func() string) {
			p := filepath.Join(dir, "plain")
			if err := os.WriteFile(p, []byte("old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p, func() string { b, _ := os.ReadFile(p); return string(b) }
		}},
		{"pipe as /proc/self/fd/N", func(t *testing.T, dir string) (string, func() string) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close(); w.Close() })
			p := "/proc/self/fd/" + strconv.Itoa(int(w.Fd()))
			return p, func() string { w.Close(); b, _ := io.ReadAll(r); return string(b) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, got := tc.target(t, t.TempDir())
			w, err := stdio.OpenOutput(ctx, "stdout", target)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(w, "new\n"); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			want := "new\n"
			if tc.name != "fifo path" && tc.name != "fifo URI" && tc.name != "pipe as /proc/self/fd/N" {
				want = "old\nnew\n"
			}
			if s := got(); s != want {
				t.Fatalf("read back %q, want %q", s, want)
			}
		})
	}
}

// TestOpenInputTargets reads stdin from a FIFO whose writer comes later
// (the open must not wait for it) and from a regular file.
func TestOpenInputTargets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	p := filepath.Join(dir, "in")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := stdio.OpenInput(ctx, "stdin", p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "abc")
	w.Close()
	if b, err := io.ReadAll(r); err != nil || string(b) != "abc" {
		t.Fatalf("read %q, %v from the FIFO; want abc", b, err)
	}

	f := filepath.Join(dir, "file")
	os.WriteFile(f, []byte("xyz"), 0o600)
	for _, target := range []string{f, "file://" + f} {
		r, err := stdio.OpenInput(ctx, "stdin", target)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != "xyz" {
			t.Fatalf("read %q, %v from %s; want xyz", b, err, target)
		}
	}
}

// TestOpenBadTargets: what is not a stream fails at once with a kind the
// caller can classify and a message naming the target.
func TestOpenBadTargets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	for _, tc := range []struct {
		target string
		want   error
	}{
		{"binary:///usr/bin/logger", errdefs.ErrNotImplemented},
		{"relative/out", errdefs.ErrInvalidArgument},
		{"file://host/var/log/x", errdefs.ErrInvalidArgument},
		{"fifo:relative", errdefs.ErrInvalidArgument},
		{"%zz", errdefs.ErrInvalidArgument},
		{filepath.Join(dir, "missing"), errdefs.ErrNotFound},
		{dir, errdefs.ErrInvalidArgument},
	} {
		w, err := stdio.OpenOutput(ctx, "stdout", tc.target)
		if !errors.Is(err, tc.want) {
			if w != nil {
				w.Close()
			}
			t.Errorf("OpenOutput(%q) = %v, want an error wrapping %v", tc.target, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), "stdout") {
			t.Errorf("OpenOutput(%q): %v does not name the stream", tc.target, err)
		}
		if _, err := stdio.OpenInput(ctx, "stdin", tc.target); !errors.Is(err, tc.want) {
			t.Errorf("OpenInput(%q) = %v, want an error wrapping %v", tc.target, err, tc.want)
		}
	}
}
