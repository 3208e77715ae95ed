package quark

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// process is Quark's sandbox process. It is not our child (quark forks it
// and exits), so it is held by a pidfd: signals go to that very process
// even if its pid is reused, and the pidfd becomes readable when it exits.
type process struct {
	pid   int
	start uint64 // start time, clock ticks after boot (/proc/PID/stat field 22)
	fd    int
	done  chan struct{} // closed when the process has exited

	mu     sync.Mutex
	closed bool
	killed bool
}

// attach holds process pid if it still runs and started at start.
func attach(pid int, start uint64) (*process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("no sandbox process recorded: %w", errdefs.ErrNotFound)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox process %d: %w: %w", pid, err, errdefs.ErrNotFound)
	}
	// Checked after the pidfd pins the process: it is the one recorded.
	if st, err := startTime(pid); err != nil || st != start {
		unix.Close(fd)
		return nil, fmt.Errorf("sandbox process %d is gone (start time %d, recorded %d; %v): %w", pid, st, start, err, errdefs.ErrNotFound)
	}
	p := &process{pid: pid, start: start, fd: fd, done: make(chan struct{})}
	go p.watch()
	return p, nil
}

// watch closes done when the process exits.
func (p *process) watch() {
	defer close(p.done)
	for {
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, -1)
		if err == nil || !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// alive is the liveness probe: signal 0 to the process.
func (p *process) alive() bool {
	return !p.exited() && unix.PidfdSendSignal(p.fd, 0, nil, 0) == nil
}

// kill sends SIGKILL and waits (bounded) for the process to be gone.
func (p *process) kill() {
	p.mu.Lock()
	if !p.closed && !p.exited() {
		p.killed = true
		_ = unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	}
	p.mu.Unlock()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	}
}

// close releases the pidfd once the process has exited (watch polls it
// until then).
func (p *process) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.exited() {
		return
	}
	p.closed = true
	unix.Close(p.fd)
}

// startTime reads the start time of process pid (field 22 of
// /proc/PID/stat, counted after the command, which may hold spaces).
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return 0, fmt.Errorf("/proc/%d/stat has no command field", pid)
	}
	f := strings.Fields(s[j+1:])
	// f[0] is field 3 (state): field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat has %d fields after the command", pid, len(f))
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}
