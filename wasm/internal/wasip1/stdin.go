package wasip1

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A read of the caller's reader asks for what the guest's fd_read asks
// for, up to stdinMaxRead; one started by poll_oneoff for stdinPollRead.
// An instance blocked on stdin holds no more than the guest's request.
const (
	stdinMaxRead  = 64 << 10
	stdinPollRead = 4 << 10
)

// stdinReader is the guest's fd 0 over any io.Reader (a FIFO, a terminal,
// a pipe, a string). A read of the caller's reader runs on a goroutine of
// its own, so that the guest can wait for input, poll it, read it without
// blocking (fdflags nonblock) and be stopped while waiting. Nothing is read
// ahead of the guest asking for input; what one read brings is kept until
// the guest consumed it.
type stdinReader struct {
	r io.Reader
	// raw is the descriptor of r when it is a file (a FIFO, a pipe, a
	// terminal), whose readiness poll(2) tells at once.
	raw syscall.RawConn

	buf  []byte // data read and not yet given to the guest
	err  error  // the reader's error once it failed (io.EOF at the end)
	rbuf []byte // the buffer of reads

	pending chan readResult // set while a read runs

	// direct is r when the guest's own goroutine can read it in place
	// and be stopped while it waits (a FIFO in Go's poller): a blocking
	// fd_read then reads into the guest's buffer, with no goroutine and
	// no buffer of the host's.
	direct deadlineReader
	// blocking brackets a wait of the guest's goroutine (Config.Blocking).
	blocking func() (resume func())
}

// deadlineReader is a reader whose reads a deadline stops: an *os.File in
// Go's poller, the task service's stdin FIFO.
type deadlineReader interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

type readResult struct {
	n   int
	err error
}

// init makes s read r.
func (s *stdinReader) init(r io.Reader) {
	s.r = r
	if c, ok := r.(syscall.Conn); ok {
		if rc, err := c.SyscallConn(); err == nil {
			s.raw = rc
		}
	}
	if d, ok := r.(deadlineReader); ok && s.raw != nil {
		if f, isFile := r.(*os.File); !isFile || f.SetReadDeadline(time.Time{}) == nil {
			// An *os.File outside the poller (a regular file, a
			// blocking terminal) takes no deadline: it is read on a
			// goroutine of its own.
			s.direct = d
		}
	}
}

// readDirect is a blocking read of the input into the guest's first
// non-empty buffer, on the guest's goroutine, stopped when ctx ends. It
// reports false when it cannot serve the read (a read or its result is
// pending from poll_oneoff): the caller goes the goroutine way.
func (s *stdinReader) readDirect(ctx context.Context, bufs [][]byte) (n int, stopped, ok bool) {
	if s.direct == nil || s.pending != nil || len(s.buf) > 0 || s.err != nil {
		return 0, false, false
	}
	var b []byte
	for _, b = range bufs {
		if len(b) > 0 {
			break
		}
	}
	if s.blocking != nil {
		defer s.blocking()()
	}
	stop := context.AfterFunc(ctx, func() { s.direct.SetReadDeadline(time.Unix(1, 0)) })
	n, err := s.direct.Read(b)
	if !stop() && n == 0 {
		return 0, true, true
	}
	if n == 0 && err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		s.err = err
	}
	return n, false, true
}

// peek reports, without blocking, whether a read would return at once, with
// the bytes known to be there and whether the input ended.
func (s *stdinReader) peek() (ready bool, nbytes uint64, hangup bool) {
	if len(s.buf) > 0 {
		return true, uint64(len(s.buf)), false
	}
	if s.err != nil {
		return true, 0, true
	}
	if s.pending == nil && s.raw != nil {
		var revents int16
		var avail int
		s.raw.Control(func(fd uintptr) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 0); err == nil && n == 1 {
				revents = pfd[0].Revents
				avail, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ)
			}
		})
		switch {
		case avail > 0:
			return true, uint64(avail), false
		case revents&(unix.POLLHUP|unix.POLLERR) != 0:
			return true, 0, true
		case revents&unix.POLLIN != 0:
			return true, 0, false
		}
		return false, 0, false
	}
	if !s.wait(nil, false, stdinPollRead) {
		return false, 0, false
	}
	return s.peek()
}

// ready reports whether a read would not block: data or an error is there.
func (s *stdinReader) ready() bool { return len(s.buf) > 0 || s.err != nil }

// start begins a read of the caller's reader unless one runs or its
// result is there. It returns the channel the result comes on (nil when
// ready).
func (s *stdinReader) start(size int) chan readResult {
	if s.ready() {
		return nil
	}
	if s.r == nil {
		s.err = io.EOF
		return nil
	}
	if s.pending == nil {
		size = min(max(size, 1), stdinMaxRead)
		if cap(s.rbuf) < size {
			s.rbuf = make([]byte, size)
		}
		s.rbuf = s.rbuf[:size]
		ch := make(chan readResult, 1)
		s.pending = ch
		go func(buf []byte) {
			n, err := s.r.Read(buf)
			ch <- readResult{n, err}
		}(s.rbuf)
	}
	return s.pending
}

// finish takes a read's result.
func (s *stdinReader) finish(res readResult) {
	s.pending = nil
	s.buf = s.rbuf[:res.n]
	if res.err != nil && res.n == 0 {
		s.err = res.err
	}
}

// wait blocks until input is there or done is closed; it reports whether
// input (or an error) is there. With block unset it only looks. size is
// what a read started here asks for.
func (s *stdinReader) wait(done <-chan struct{}, block bool, size int) bool {
	ch := s.start(size)
	if ch == nil {
		return true
	}
	if !block {
		select {
		case res := <-ch:
			s.finish(res)
			return true
		default:
			return false
		}
	}
	if s.blocking != nil {
		defer s.blocking()()
	}
	select {
	case res := <-ch:
		s.finish(res)
		return true
	case <-done:
		return false
	}
}

// read copies buffered input into the guest's buffers; at the end of the
// input it returns 0 bytes.
func (s *stdinReader) read(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		c := copy(b, s.buf)
		s.buf = s.buf[c:]
		n += c
		if len(s.buf) == 0 {
			break
		}
	}
	return n
}
