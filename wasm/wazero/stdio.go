package wazero

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// cancelWriter is the guest's stdout or stderr: a write blocked on the
// caller's writer (a pipe or FIFO nobody reads) returns as soon as the run
// is stopped, so a guest flooding an unread stream can still be killed or
// timed out. The bytes are copied before the write is handed to a
// goroutine: the guest's memory may be reused once the run ended. An
// abandoned write is left to finish (or fail when the caller closes its
// writer); later writes fail at once.
type cancelWriter struct {
	w         io.Writer
	done      <-chan struct{}
	buf       []byte
	abandoned bool
}

// errStopped is what a write of a stopped guest returns.
var errStopped = fmt.Errorf("the instance was stopped: %w", io.ErrClosedPipe)

// newCancelWriter wraps w, except for writers that never block.
func newCancelWriter(w io.Writer, done <-chan struct{}) io.Writer {
	switch w.(type) {
	case *bytes.Buffer, *strings.Builder:
		return w
	}
	if w == io.Discard {
		return w
	}
	return &cancelWriter{w: w, done: done}
}

func (c *cancelWriter) Write(p []byte) (int, error) {
	if c.abandoned {
		return 0, errStopped
	}
	select {
	case <-c.done:
		return 0, errStopped
	default:
	}
	// buf is free: the previous write completed (an abandoned one ends
	// every later write above).
	c.buf = append(c.buf[:0], p...)
	ch := make(chan writeResult, 1)
	go func(b []byte) {
		n, err := c.w.Write(b)
		ch <- writeResult{n, err}
	}(c.buf)
	select {
	case r := <-ch:
		return r.n, r.err
	case <-c.done:
		c.abandoned = true
		c.buf = nil
		return 0, errStopped
	}
}

type writeResult struct {
	n   int
	err error
}
