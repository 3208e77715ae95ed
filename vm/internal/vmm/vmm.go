// Package vmm runs and watches hypervisor processes for the VM drivers:
// start with output to a log file, wait (for a child or for a re-attached
// process after a sandboxer restart), kill, and private unix sockets.
package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// Process is one hypervisor process.
type Process struct {
	pid     int
	cmd     *exec.Cmd
	done    chan struct{}
	once    sync.Once
	err     error
	logPath string
}

// Start runs path with args in its own process group, its stdout and
// stderr appended to logPath.
func Start(path string, args []string, logPath string) (*Process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &Process{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Attach watches an existing process (not a child) whose command line
// contains match, e.g. after the sandboxer restarted. It fails with
// ErrNotFound when no such process runs (gone, or the pid was reused).
func Attach(pid int, match, logPath string) (*Process, error) {
	if !alive(pid, match) {
		return nil, fmt.Errorf("hypervisor process %d (%s) is gone: %w", pid, match, errdefs.ErrNotFound)
	}
	p := &Process{pid: pid, done: make(chan struct{}), logPath: logPath}
	go func() {
		for alive(pid, match) {
			time.Sleep(100 * time.Millisecond)
		}
		close(p.done)
	}()
	return p, nil
}

func alive(pid int, match string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 { // gone, or a zombie
		return false
	}
	return bytes.Contains(b, []byte(match))
}

// Pid is the process id.
func (p *Process) Pid() int { return p.pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait blocks until the process exits or ctx is done.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL and waits (bounded) for the process to be gone.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Tail returns the last n bytes of the process's log, for error messages.
func (p *Process) Tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// ExitError describes how the process ended.
func (p *Process) ExitError() error {
	if !p.Exited() {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee
	}
	return p.err
}

// Listen listens on a unix socket at path (removing a stale one) with mode
// 0600.
func Listen(path string) (*net.UnixListener, error) {
	_ = os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// WaitForSocket waits until a unix socket at path accepts connections, the
// process exits or ctx ends.
func WaitForSocket(ctx context.Context, p *Process, path string) error {
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("hypervisor exited before opening %s: %s: %w", path, p.Tail(2000), errdefs.ErrUnavailable)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
