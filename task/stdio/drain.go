package stdio

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DrainTimeout bounds how long a process's exit waits for the readers of its
// output FIFOs (Drain): long enough for a loaded containerd, short enough
// that a peer which never reads cannot hold an exit for long.
const DrainTimeout = 5 * time.Second

// Drain waits until the readers of the output FIFOs have taken every byte
// written to them, or until timeout passes. Call it after the process's last
// write and before Close and before its exit is published.
//
// Why: containerd opens its ends of the FIFOs on goroutines
// (github.com/containerd/fifo) and cancels those opens when it deletes the
// task. A guest that writes and exits within a few milliseconds of its start
// (a Wasm "hello") can have its exit handled, and the task deleted, before
// that goroutine has taken the opened file: containerd then closes the FIFO
// unread ("reading from a closed fifo") and the container's whole output is
// lost, although the kernel held it. Bytes gone from the FIFO were read by an
// opened reader, which reads on to end of file whatever happens next.
//
// Outputs that are not FIFOs (file://) are not waited for. The error wraps
// context.DeadlineExceeded and names the FIFO and the bytes left unread.
func (p *Pipes) Drain(timeout time.Duration) error {
	if p == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	wait := 50 * time.Microsecond
	for {
		pending, name, err := p.unread()
		if err != nil || pending == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d bytes written to output FIFO %s are still unread after %s: the reader (containerd) did not open or read it: %w", pending, name, timeout, context.DeadlineExceeded)
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// unread sums the bytes waiting in the output FIFOs (FIONREAD works on
// either end of a pipe) and names one FIFO that holds some.
func (p *Pipes) unread() (total int, name string, _ error) {
	for _, o := range p.outputs {
		sc, ok := o.f.(syscall.Conn)
		if !ok {
			continue
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			// A FIFO closed already has nothing left to drain.
			continue
		}
		var n int
		var cerr error
		if err := rc.Control(func(fd uintptr) {
			var st unix.Stat_t
			if cerr = unix.Fstat(int(fd), &st); cerr != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
				return
			}
			n, cerr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
		}); err != nil {
			continue
		}
		if cerr != nil {
			return 0, "", fmt.Errorf("count the unread bytes of an output FIFO: %w", cerr)
		}
		if n > 0 {
			total += n
			if name == "" {
				name = o.name
			}
		}
	}
	return total, name, nil
}

// output is an opened output stream and what it was opened from.
type output struct {
	name string
	f    io.WriteCloser
}
