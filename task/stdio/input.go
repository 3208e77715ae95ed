package stdio

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fifoInput is the reading end of a stdin FIFO, read in place: no pump
// goroutine, no copy buffer, one descriptor (non-blocking, in Go's poller),
// so that a guest blocked on its stdin holds nothing but its own goroutine,
// parked in the poller until input comes.
//
// Opening a FIFO's reading end with O_NONBLOCK succeeds before any writer
// is there, and read(2) then returns 0 as at the end of the input; the end
// of the input is the writer's hangup (POLLHUP) instead, so a read that
// finds no writer yet waits for one to write or hang up, as containerd's
// fifo package (a blocking open on a goroutine, and an O_PATH descriptor
// held for the FIFO's life) waits for the writer's open.
type fifoInput struct {
	f  *os.File
	rc syscall.RawConn

	mu sync.Mutex
	// err is what reads return once the input was closed: io.EOF after
	// CloseStdin, the kill's error after Abort.
	err error
}

// openFifoInput opens the FIFO at path for reading without waiting for its
// writer.
func openFifoInput(path string) (*fifoInput, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fifoInput{f: f, rc: rc}, nil
}

// Read reads what the writer wrote, waiting in Go's poller (no thread held)
// until there is some or the writer hung up (io.EOF).
func (in *fifoInput) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := in.rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b)
			if rerr != unix.EINTR {
				break
			}
		}
		switch {
		case rerr == unix.EAGAIN:
			return false
		case rerr == nil && n == 0 && !hungUp(int(fd)):
			// No writer has opened the FIFO yet: wait for it.
			return false
		}
		return true
	})
	if err != nil {
		return 0, in.closedErr(err)
	}
	if rerr != nil {
		return 0, &os.PathError{Op: "read", Path: in.f.Name(), Err: rerr}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// SyscallConn is the FIFO's descriptor, for a reader that polls it (the
// WASI host's poll_oneoff) rather than reading.
func (in *fifoInput) SyscallConn() (syscall.RawConn, error) { return in.rc, nil }

// SetReadDeadline bounds a Read in progress or to come (os.File's).
func (in *fifoInput) SetReadDeadline(t time.Time) error { return in.f.SetReadDeadline(t) }

// closedErr is what a read that failed with err returns: the reason the
// input was closed when it was (the poller reports a close during a read
// as its own "use of closed file"), else err.
func (in *fifoInput) closedErr(err error) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.err != nil {
		return in.err
	}
	return err
}

// closeWith closes the FIFO; reads in progress and to come return why.
// Only the first reason is kept.
func (in *fifoInput) closeWith(why error) error {
	in.mu.Lock()
	if in.err != nil {
		in.mu.Unlock()
		return nil
	}
	in.err = why
	in.mu.Unlock()
	return in.f.Close()
}

// Close ends the input: reads return io.EOF.
func (in *fifoInput) Close() error { return in.closeWith(io.EOF) }

// hungUp reports whether the FIFO's writer has come and gone.
func hungUp(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err == nil && n == 1 && pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
}

// errKilled is what stdin reads return after Abort.
var errKilled = fmt.Errorf("task killed: %w", io.ErrClosedPipe)
