// Package stdio connects a task's standard streams to what containerd names
// in the Task API's Create and Exec requests: the FIFOs it creates for a
// container (or exec), or a file:// log URI. It is the one opener of those
// streams on the host, for the Wasm task service and for the stdio pumps of
// the agent backends' forwarder (task/forward).
//
// containerd opens the reading ends of the stdout/stderr FIFOs (and the
// writing end of stdin) before it sends Create, so opening our ends does not
// block for long; every open still honours ctx so that a missing peer cannot
// hang the Task API. A path that is not a FIFO (a regular file, a tty, a
// pipe named /proc/self/fd/N, as a CLI may pass) is opened without waiting.
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

	// stdin is the stdin FIFO, read in place by the guest (fifoInput),
	// or another input, read through stdinPipe.
	stdin      *fifoInput
	stdinPipe  *pipedInput
	closers    []io.Closer
	outputs    []output // Stdout and Stderr, for Drain
	closeOnce  sync.Once
	stdinClose sync.Once
	outOnce    sync.Once
	outErr     error
}

// Open opens the streams in cfg (see OpenInput and OpenOutput): stdin for
// reading, stdout and stderr for writing. A terminal is refused with
// errdefs.ErrNotImplemented: the tasks served through Pipes (Wasm modules,
// and the guest agent's processes) get no pseudo terminal. On error nothing
// stays open.
func Open(ctx context.Context, cfg Config) (_ *Pipes, retErr error) {
	if cfg.Terminal {
		return nil, fmt.Errorf("terminal=true: this runtime gives tasks no pseudo terminal; run the container without tty (ctr without -t, crictl/kubernetes: tty: false): %w", errdefs.ErrNotImplemented)
	}
	p := &Pipes{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if cfg.Stdout != "" {
		f, err := OpenOutput(ctx, "stdout", cfg.Stdout)
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
			f, err := OpenOutput(ctx, "stderr", cfg.Stderr)
			if err != nil {
				return nil, err
			}
			p.closers = append(p.closers, f)
			p.outputs = append(p.outputs, output{cfg.Stderr, f})
			p.Stderr = f
		}
	}
	if cfg.Stdin != "" {
		f, err := OpenInput(ctx, "stdin", cfg.Stdin)
		if err != nil {
			return nil, err
		}
		if in, ok := f.(*fifoInput); ok {
			p.stdin = in
			p.Stdin = in
		} else {
			p.stdinPipe = newPipedInput(f)
			p.Stdin = p.stdinPipe.r
		}
	}
	return p, nil
}

// OpenOutput opens an output stream named target for writing, in the forms
// containerd's shims accept: an absolute path or fifo:///path (what CRI and
// ctr give; the path may also be a regular file, a tty or another process's
// pipe such as /proc/self/fd/N), or file:///path (ctr --log-uri: the file
// is created, with its directory, and appended to). name ("stdout") is for
// error messages. A FIFO is opened for writing once its reader is there,
// waiting at most until ctx ends; nothing else ever blocks. The binary://
// log-driver form would need a helper process per container and is refused
// with errdefs.ErrNotImplemented; a target that is no path or URI at all
// with errdefs.ErrInvalidArgument.
func OpenOutput(ctx context.Context, name, target string) (io.WriteCloser, error) {
	scheme, path, err := parseTarget(name, target)
	if err != nil {
		return nil, err
	}
	if scheme == "file" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("%s log file %s: %w", name, path, err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("open %s log file %s: %w", name, path, err)
		}
		return f, nil
	}
	isFifo, err := checkStream(name, path)
	if err != nil {
		return nil, err
	}
	if isFifo {
		f, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s fifo %s: %w", name, path, err)
		}
		return f, nil
	}
	// A regular file, a tty or a character device: opening it does not
	// wait for anyone.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s %s for writing: %w", name, path, err)
	}
	return f, nil
}

// OpenInput opens an input stream named target for reading: an absolute
// path or fifo:///path (a FIFO, a regular file, a tty, /proc/self/fd/N), or
// file:///path. It never waits for a FIFO's writer: reads wait instead
// (containerd opens the writing end before it sends Create anyway). Errors
// are as for OpenOutput.
func OpenInput(ctx context.Context, name, target string) (io.ReadCloser, error) {
	_, path, err := parseTarget(name, target)
	if err != nil {
		return nil, err
	}
	isFifo, err := checkStream(name, path)
	if err != nil {
		return nil, err
	}
	if isFifo {
		// O_NONBLOCK: the open does not wait for the writer; reads
		// do (fifoInput).
		f, err := openFifoInput(path)
		if err != nil {
			return nil, fmt.Errorf("open %s fifo %s: %w", name, path, err)
		}
		return f, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s %s for reading: %w", name, path, err)
	}
	return f, nil
}

// parseTarget splits a stream target into its scheme ("" for a plain path,
// "fifo" or "file") and its absolute path.
func parseTarget(name, target string) (scheme, path string, _ error) {
	if filepath.IsAbs(target) {
		// A plain path is never parsed as a URI: "?" and "%" are
		// ordinary characters in it.
		return "", filepath.Clean(target), nil
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", "", fmt.Errorf("%s %q is neither an absolute path nor a URI: %w: %w", name, target, err, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "fifo", "file":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return "", "", fmt.Errorf("%s %q: a %s URI names an absolute local path, e.g. %s:///var/log/ctr.log: %w", name, target, u.Scheme, u.Scheme, errdefs.ErrInvalidArgument)
		}
		return u.Scheme, filepath.Clean(u.Path), nil
	case "":
		return "", "", fmt.Errorf("%s %q is a relative path; containerd passes absolute FIFO paths: %w", name, target, errdefs.ErrInvalidArgument)
	default:
		return "", "", fmt.Errorf("%s %q: the %s:// logging form is not supported; use a FIFO or file:///path: %w", name, target, u.Scheme, errdefs.ErrNotImplemented)
	}
}

// checkStream reports whether path is a FIFO, and refuses what cannot be a
// stream (a directory, a missing file) with a clear error.
func checkStream(name, path string) (isFifo bool, _ error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("%s %s does not exist: containerd creates the FIFOs before Create; a log file needs file:///path: %w", name, path, errdefs.ErrNotFound)
		}
		return false, fmt.Errorf("%s %s: %w", name, path, err)
	}
	if st.IsDir() {
		return false, fmt.Errorf("%s %s is a directory, not a stream: %w", name, path, errdefs.ErrInvalidArgument)
	}
	return st.Mode()&os.ModeNamedPipe != 0, nil
}

// pipedInput is a stdin that is not a FIFO (a regular file, a terminal,
// another process's pipe), copied into a pipe by a goroutine of its own so
// that CloseStdin and Abort can end the guest's input even while it is
// blocked in a read.
type pipedInput struct {
	src  io.ReadCloser
	r    *io.PipeReader
	w    *io.PipeWriter
	done chan struct{}
}

func newPipedInput(src io.ReadCloser) *pipedInput {
	r, w := io.Pipe()
	in := &pipedInput{src: src, r: r, w: w, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		_, err := io.Copy(w, src)
		if errors.Is(err, io.ErrClosedPipe) {
			err = nil
		}
		w.CloseWithError(err)
	}()
	return in
}

// CloseStdin makes the guest's stdin report end of file (Task API CloseIO).
func (p *Pipes) CloseStdin() {
	if p == nil {
		return
	}
	p.stdinClose.Do(func() {
		if p.stdin != nil {
			p.stdin.Close()
		}
		if p.stdinPipe != nil {
			p.stdinPipe.w.Close()
			p.stdinPipe.src.Close()
		}
	})
}

// Abort makes every pending and future stdin read fail, so that a guest
// blocked on input returns to the engine, which can then stop it.
func (p *Pipes) Abort() {
	if p == nil {
		return
	}
	if p.stdin != nil {
		p.stdin.closeWith(errKilled)
	}
	if p.stdinPipe != nil {
		p.stdinPipe.r.CloseWithError(errKilled)
	}
	p.CloseStdin()
}

// Close closes every stream. It is safe to call more than once.
func (p *Pipes) Close() error {
	if p == nil {
		return nil
	}
	var errs []error
	p.closeOnce.Do(func() {
		if p.stdinPipe != nil {
			p.stdinPipe.r.Close()
		}
		p.CloseStdin()
		if p.stdinPipe != nil {
			<-p.stdinPipe.done
		}
		if err := p.CloseOutputs(); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// CloseOutputs closes Stdout and Stderr only, so that their readers see end
// of file while stdin stays open (a forwarder whose remote output streams
// ended). It is safe to call more than once, and before or after Close.
func (p *Pipes) CloseOutputs() error {
	if p == nil {
		return nil
	}
	p.outOnce.Do(func() {
		var errs []error
		for _, c := range p.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		p.outErr = errors.Join(errs...)
	})
	return p.outErr
}
