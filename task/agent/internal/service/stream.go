package service

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// DefaultStreamBuffer is how much output of one stream the agent holds while
// nobody reads it. When it is full the agent stops reading the pipe, so the
// process blocks in write(2): backpressure, never loss.
const DefaultStreamBuffer = 1 << 20

// outStream buffers what a process writes to one pipe until the host reads
// it with ReadStdout/ReadStderr.
type outStream struct {
	mu    sync.Mutex
	buf   []byte
	limit int
	eof   bool
	err   error
	wake  chan struct{} // closed and replaced on every state change
	done  chan struct{} // closed when the pipe reached EOF
}

func newOutStream(r *os.File, limit int) *outStream {
	s := &outStream{limit: limit, wake: make(chan struct{}), done: make(chan struct{})}
	go s.pump(r)
	return s
}

func (s *outStream) changed() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *outStream) pump(r *os.File) {
	defer r.Close()
	defer close(s.done)
	chunk := make([]byte, 32<<10)
	for {
		s.mu.Lock()
		for len(s.buf) >= s.limit {
			w := s.wake
			s.mu.Unlock()
			<-w
			s.mu.Lock()
		}
		room := s.limit - len(s.buf)
		s.mu.Unlock()
		if room > len(chunk) {
			room = len(chunk)
		}
		n, err := r.Read(chunk[:room])
		s.mu.Lock()
		s.buf = append(s.buf, chunk[:n]...)
		if err != nil {
			s.eof = true
			if !errors.Is(err, io.EOF) {
				s.err = err
			}
		}
		s.changed()
		eof := s.eof
		s.mu.Unlock()
		if eof {
			return
		}
	}
}

// Read blocks until data is buffered, the stream ended (io.EOF) or ctx ends,
// and returns at most max bytes.
func (s *outStream) Read(ctx context.Context, max int) ([]byte, error) {
	for {
		s.mu.Lock()
		if len(s.buf) > 0 {
			n := min(max, len(s.buf))
			out := make([]byte, n)
			copy(out, s.buf)
			s.buf = s.buf[:copy(s.buf, s.buf[n:])]
			s.changed()
			s.mu.Unlock()
			return out, nil
		}
		if s.eof {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return nil, err
		}
		w := s.wake
		s.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// inStream is the write end of a process's stdin pipe.
type inStream struct {
	mu sync.Mutex
	w  *os.File
}

// Write writes p to the pipe; when ctx has a deadline a process that does
// not read its stdin makes Write fail at the deadline instead of hanging.
func (s *inStream) Write(ctx context.Context, p []byte) (int, error) {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	if w == nil {
		return 0, os.ErrClosed
	}
	if d, ok := ctx.Deadline(); ok {
		_ = w.SetWriteDeadline(d)
		defer w.SetWriteDeadline(time.Time{})
	}
	return w.Write(p)
}

func (s *inStream) Close() error {
	s.mu.Lock()
	w := s.w
	s.w = nil
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.Close()
}
