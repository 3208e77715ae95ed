// Package vmm runs and watches hypervisor processes for the VM drivers:
// start with output to a log file, wait (for a child or for a re-attached
// process after a sandboxer restart), kill, and private unix sockets.
//
// Every process it starts is owned by the directory of its log file (the
// VM's state directory): it carries that directory as its mark
// (internal/procmark) and is recorded beside its log, in <log>.proc,
// before it starts and again with its pid and start time once it runs
// (see ledger.go), so a sandboxer restarted after a crash re-attaches or
// reaps it.
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

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// Process is one hypervisor process.
type Process struct {
	pid int
	// id is the pid with its start time (and mark) once known: kills
	// of a re-attached process go through it (procmark.Kill).
	id  procmark.Proc
	cmd *exec.Cmd
	// idErr is why a child's start time could not be read (see child).
	idErr   error
	done    chan struct{}
	once    sync.Once
	err     error
	logPath string
}

// Start runs path with args in its own process group, its stdout and
// stderr appended to logPath; files are inherited as descriptors
// InheritedFD(false, 0), InheritedFD(false, 1), ...
// The process is marked and recorded (see the package doc); a failure to
// record it kills it.
func Start(path string, args []string, logPath string, files ...*os.File) (*Process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	if err := recordIntent(path, logPath); err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), procmark.Pair(Owner(logPath)))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		forget(logPath)
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := child(cmd, logPath)
	crashpoint.Hit("vmm.forked")
	if err := p.recordStarted(path); err != nil {
		p.Kill()
		forget(logPath)
		return nil, err
	}
	return p, nil
}

// child returns the Process for cmd, just started, and reaps it in the
// background. It reads the child's start time first: until cmd.Wait reaps
// it, the child's /proc entry stays, even once it has exited (a zombie), so
// the identity recorded for it is its own. Read after the reaper had
// started, the entry of a child that exited at once could be gone already
// (Start failed for a process that had run fine) or, the pid reused, be
// another process's.
func child(cmd *exec.Cmd, logPath string) *Process {
	p := &Process{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	st, err := procmark.StartTime(p.pid)
	p.id, p.idErr = procmark.Proc{Pid: p.pid, StartTime: st, Owner: Owner(logPath)}, err
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// Prepare begins a driver's Start: it fails with ErrAlreadyExists when
// the VM id already has a process p, and creates the VM's state directory
// (0700).
func Prepare(p *Process, id, stateDir string) error {
	if p != nil {
		return fmt.Errorf("vm %s already started: %w", id, errdefs.ErrAlreadyExists)
	}
	return os.MkdirAll(stateDir, 0o700)
}

// StartConfigured is Start for a binary named by key in section
// [hypervisor.<section>] of the configuration: a failure to start names
// that key, so the error says what to fix.
func StartConfigured(section, key, path string, args []string, logPath string, files ...*os.File) (*Process, error) {
	p, err := Start(path, args, logPath, files...)
	if err != nil {
		return nil, fmt.Errorf("%w (check %q in [hypervisor.%s])", err, key, section)
	}
	return p, nil
}

// Attach watches an existing process (not a child) whose command line
// contains match, e.g. after the sandboxer restarted. When the process was
// recorded beside logPath (see Start), the record must name pid and its
// start time must match, so a reused pid is never taken for the VMM. It
// fails with ErrNotFound when no such process runs (gone, or the pid was
// reused).
func Attach(pid int, match, logPath string) (*Process, error) {
	if !alive(pid, match) {
		return nil, fmt.Errorf("hypervisor process %d (%s) is gone: %w", pid, match, errdefs.ErrNotFound)
	}
	id := procmark.Proc{Pid: pid}
	if r, err := procmark.Read(RecordPath(logPath)); err == nil {
		if r.Pid != pid || !procmark.Alive(r.Proc()) {
			return nil, fmt.Errorf("hypervisor process %d (%s) is gone (its record %s names pid %d started at tick %d): %w",
				pid, match, RecordPath(logPath), r.Pid, r.StartTime, errdefs.ErrNotFound)
		}
		id = r.Proc()
	} else if st, err := procmark.StartTime(pid); err == nil {
		id.StartTime = st
	}
	return watch(id, logPath), nil
}

// watch returns a Process for id (not a child), done once it exits.
func watch(id procmark.Proc, logPath string) *Process {
	p := &Process{pid: id.Pid, id: id, done: make(chan struct{}), logPath: logPath}
	gone := procmark.Watch(id)
	go func() {
		<-gone
		close(p.done)
	}()
	return p
}

// ProcessUID is the real uid of process pid, or -1 when it cannot be read.
func ProcessUID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				if uid, err := strconv.Atoi(f[0]); err == nil {
					return uid
				}
			}
		}
	}
	return -1
}

func alive(pid int, match string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 { // gone, or a zombie
		return false
	}
	return bytes.Contains(b, []byte(match))
}

// The Pid, Exited, Wait and Kill methods accept a nil *Process (a driver
// that was never started): it has pid 0, counts as exited, and waiting for
// or killing it returns at once.

// Pid is the process id (0 for a nil Process).
func (p *Process) Pid() int {
	if p == nil {
		return 0
	}
	return p.pid
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited (true for a nil Process).
func (p *Process) Exited() bool {
	if p == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait blocks until the process exits or ctx is done (nil at once for a
// nil Process).
func (p *Process) Wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL and waits (bounded) for the process to be gone (a
// no-op for a nil Process).
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	if p.cmd == nil {
		// Not our child: the pid may have been reused since we
		// attached; procmark checks the start time through a pidfd.
		_ = procmark.Kill(p.id)
	} else {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Tail returns the last n bytes of the process's log, for error messages
// ("" for a nil Process).
func (p *Process) Tail(n int) string {
	if p == nil {
		return ""
	}
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

// Quit asks p to exit by calling quit (a QMP "quit", an API shutdown...)
// and waits for it up to timeout. It does nothing when p is nil or has
// already exited; it does not kill: the driver's clean-up does that.
func Quit(ctx context.Context, p *Process, timeout time.Duration, quit func(context.Context)) {
	if p.Exited() {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	quit(qctx)
	_ = p.Wait(qctx)
}

// Poll calls try every interval until it returns nil, p exits, or ctx
// ends. It returns nil once try succeeds; otherwise it returns what giveUp
// makes of the reason (exited is true when p exited or is nil, false when
// ctx ended) and try's last error, so each driver words its own message.
func Poll(ctx context.Context, p *Process, interval time.Duration, try func() error, giveUp func(exited bool, last error) error) error {
	for {
		err := try()
		if err == nil {
			return nil
		}
		if p == nil {
			return giveUp(true, err)
		}
		select {
		case <-p.Done():
			return giveUp(true, err)
		case <-ctx.Done():
			return giveUp(false, err)
		case <-time.After(interval):
		}
	}
}

// WaitForSocket waits until a unix socket at path accepts connections, the
// process exits or ctx ends.
func WaitForSocket(ctx context.Context, p *Process, path string) error {
	return Poll(ctx, p, 20*time.Millisecond, func() error {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}, func(exited bool, _ error) error {
		if exited {
			return fmt.Errorf("hypervisor exited before opening %s: %s: %w", path, p.Tail(2000), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
	})
}

// WaitForFile waits until path exists (virtiofsd's socket), the process
// exits or ctx ends; name says which program p is, for the error.
func WaitForFile(ctx context.Context, p *Process, name, path string) error {
	return Poll(ctx, p, 20*time.Millisecond, func() error {
		_, err := os.Stat(path)
		return err
	}, func(exited bool, _ error) error {
		if exited {
			return fmt.Errorf("%s exited: %s: %w", name, p.Tail(2000), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
	})
}
