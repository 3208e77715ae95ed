// Package stdio connects an in-process task's standard streams to the FIFOs
// containerd creates for a container (or exec) and passes in the Task API's
// Create and Exec requests.
//
// containerd opens the reading ends of the stdout/stderr FIFOs (and the
// writing end of stdin) before it sends Create, so opening our ends does not
// block for long; every open still honours ctx so that a missing peer cannot
// hang the Task API.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
)

// Config names the FIFOs of one process, as given by containerd.
type Config struct {
	Stdin, Stdout, Stderr string
	// Terminal asks for a pseudo terminal; in-process tasks have none.
	Terminal bool
}

// Pipes are a process's opened streams. Stdin is nil when the process has no
// stdin FIFO; Stdout and Stderr are nil when their FIFO path is empty.
type Pipes struct {
	// Stdin is what the guest reads. It reports io.EOF once the client
	// closes its end of the FIFO or CloseStdin is called.
	Stdin io.Reader
	// Stdout and Stderr write to the FIFOs.
	Stdout, Stderr io.Writer

	stdinFifo  io.ReadWriteCloser
	stdinR     *io.PipeReader
	stdinW     *io.PipeWriter
	stdinDone  chan struct{}
	closers    []io.Closer
	outputs    []output // Stdout and Stderr, for Drain
	closeOnce  sync.Once
	stdinClose sync.Once
}

// Open opens the FIFOs in cfg: stdin for reading, stdout and stderr for
// writing. A terminal is refused with errdefs.ErrNotImplemented because a
// Wasm guest has no tty. On error nothing stays open.
func Open(ctx context.Context, cfg Config) (_ *Pipes, retErr error) {
	if cfg.Terminal {
		return nil, fmt.Errorf("terminal=true: Wasm tasks have no pseudo terminal; run the container without tty (crictl/kubernetes: tty: false): %w", errdefs.ErrNotImplemented)
	}
	p := &Pipes{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if cfg.Stdout != "" {
		f, err := openOutput(ctx, "stdout", cfg.Stdout)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, f)
		p.outputs = append(p.outputs, output{cfg.Stdout, f})
		p.Stdout = f
	}
	if cfg.Stderr != "" {
		if cfg.Stderr == cfg.Stdout && p.Stdout != nil {
			p.Stderr = p.Stdout
		} else {
			f, err := openOutput(ctx, "stderr", cfg.Stderr)
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, f)
			p.outputs = append(p.outputs, output{cfg.Stderr, f})
			p.Stderr = f
		}
	}
	if cfg.Stdin != "" {
		// O_NONBLOCK: do not wait for the writer here; reads block until
		// it is there (containerd opens it before Create anyway).
		f, err := fifo.OpenFifo(context.WithoutCancel(ctx), cfg.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open stdin fifo %s: %w", cfg.Stdin, err)
		}
		p.stdinFifo = f
		p.stdinR, p.stdinW = io.Pipe()
		p.stdinDone = make(chan struct{})
		p.Stdin = p.stdinR
		go p.pumpStdin()
	}
	return p, nil
}

// openOutput opens an output stream the way containerd's shims accept it: a
// FIFO path (what CRI and ctr give), fifo:// or file:// (ctr --log-uri). The
// binary:// log-driver form would need a helper process per container and is
// refused.
func openOutput(ctx context.Context, name, target string) (io.WriteCloser, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("%s %q is neither a path nor a URI: %w: %w", name, target, err, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "", "fifo":
		p := target
		if u.Scheme != "" {
			p = u.Path
		}
		f, err := fifo.OpenFifo(ctx, p, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s fifo %s: %w", name, p, err)
		}
		return f, nil
	case "file":
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, fmt.Errorf("%s log file %s: %w", name, u.Path, err)
		}
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open %s log file %s: %w", name, u.Path, err)
		}
		return f, nil
	default:
		return nil, fmt.Errorf("%s %q: the %s:// logging form is not supported for Wasm tasks; use a FIFO or file:///path: %w", name, target, u.Scheme, errdefs.ErrNotImplemented)
	}
}

// pumpStdin copies the FIFO into the pipe the guest reads, so that CloseStdin
// can end the guest's input even while it is blocked in a read.
func (p *Pipes) pumpStdin() {
	defer close(p.stdinDone)
	_, err := io.Copy(p.stdinW, p.stdinFifo)
	if errors.Is(err, io.ErrClosedPipe) {
		err = nil
	}
	p.stdinW.CloseWithError(err)
}

// CloseStdin makes the guest's stdin report end of file (Task API CloseIO).
func (p *Pipes) CloseStdin() {
	if p == nil || p.stdinW == nil {
		return
	}
	p.stdinClose.Do(func() {
		p.stdinW.Close()
		p.stdinFifo.Close()
	})
}

// Abort makes every pending and future stdin read fail, so that a guest
// blocked on input returns to the engine, which can then stop it.
func (p *Pipes) Abort() {
	if p == nil || p.stdinR == nil {
		return
	}
	p.stdinR.CloseWithError(fmt.Errorf("task killed: %w", io.ErrClosedPipe))
	p.CloseStdin()
}

// Close closes every stream. It is safe to call more than once.
func (p *Pipes) Close() error {
	if p == nil {
		return nil
	}
	var errs []error
	p.closeOnce.Do(func() {
		if p.stdinR != nil {
			p.stdinR.Close()
		}
		p.CloseStdin()
		if p.stdinDone != nil {
			<-p.stdinDone
		}
		for _, c := range p.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}
