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

	"github.com/kuasar-go/kuasar/task/stdio"
)

// TestStdinFifo checks the stdin FIFO read in place: a read before the
// writer opened the FIFO waits for it (a FIFO's read end without a writer
// reads as end of file), then gets what it writes, and end of file once the
// writer hangs up; Abort fails a blocked read with the kill's error; the
// FIFO costs one descriptor and no goroutine.
func TestStdinFifo(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(p *stdio.Pipes, w *os.File)
		want error
	}{
		{"writer hangs up", func(_ *stdio.Pipes, w *os.File) { w.Close() }, io.EOF},
		{"CloseStdin", func(p *stdio.Pipes, _ *os.File) { p.CloseStdin() }, io.EOF},
		{"Abort", func(p *stdio.Pipes, _ *os.File) { p.Abort() }, io.ErrClosedPipe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "in")
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
			before := countFDs(t)
			p, err := stdio.Open(context.Background(), stdio.Config{Stdin: path})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if n := countFDs(t) - before; n != 1 {
				t.Errorf("the stdin FIFO holds %d descriptors, want 1", n)
			}
			type result struct {
				s   string
				err error
			}
			read := func() chan result {
				ch := make(chan result, 1)
				go func() {
					b := make([]byte, 16)
					n, err := p.Stdin.Read(b)
					ch <- result{string(b[:n]), err}
				}()
				return ch
			}
			// No writer yet: the read waits rather than reporting EOF.
			ch := read()
			select {
			case r := <-ch:
				t.Fatalf("read without a writer returned %q, %v; want it to wait", r.s, r.err)
			case <-time.After(100 * time.Millisecond): // the read had the time to return wrongly
			}
			w, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := w.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			if r := <-ch; r.s != "ping" || r.err != nil {
				t.Fatalf("read %q, %v; want ping", r.s, r.err)
			}
			ch = read()
			tc.end(p, w)
			select {
			case r := <-ch:
				if r.s != "" || !errors.Is(r.err, tc.want) {
					t.Errorf("read after the end: %q, %v; want %v", r.s, r.err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("a blocked read did not end")
			}
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}
