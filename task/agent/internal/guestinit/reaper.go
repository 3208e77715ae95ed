package guestinit

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Exit is the end of a process as seen by wait4.
type Exit struct {
	// Pid is the process id in the agent's pid namespace.
	Pid int
	// Status is the exit code, or 128+signal when it was killed.
	Status int
	// At is when the reaper collected it.
	At time.Time
}

// Reaper is the single owner of wait4 in the agent. Everything that starts a
// child must do so through Start, which registers the pid before the reaper
// can collect it; every other child (orphans re-parented to the agent as PID 1
// or as a child subreaper) is reaped and dropped. Nothing else in the process
// may call wait: not exec.Cmd.Wait, not os.Process.Wait.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan Exit
	orphans int
	kick    chan struct{}
}

var (
	reaperOnce sync.Once
	reaper     *Reaper
)

// GlobalReaper returns the process-wide reaper, starting its SIGCHLD loop on
// first use and making the process a child subreaper so orphans of its
// children come back to it (as PID 1 they do anyway).
func GlobalReaper(ctx context.Context) *Reaper {
	reaperOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			log.G(ctx).WithError(err).Warn("cannot become child subreaper")
		}
		reaper = &Reaper{waiters: map[int]chan Exit{}, kick: make(chan struct{}, 1)}
		sigs := make(chan os.Signal, 32)
		signal.Notify(sigs, unix.SIGCHLD)
		go func() {
			for range sigs {
				select {
				case reaper.kick <- struct{}{}:
				default:
				}
			}
		}()
		go reaper.loop(ctx)
	})
	return reaper
}

// Start calls start, which must fork exactly one child and return its pid,
// with the reaper's table locked, and returns a channel that receives that
// child's Exit exactly once. Because dispatch needs the same lock, the exit
// of a child that dies immediately cannot be lost.
func (r *Reaper) Start(start func() (int, error)) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// Orphans returns how many processes the reaper collected that nobody had
// registered (orphans re-parented to the agent).
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

func (r *Reaper) loop(ctx context.Context) {
	tick := time.NewTicker(time.Second) // a safety net should a SIGCHLD be coalesced away
	defer tick.Stop()
	for {
		select {
		case <-r.kick:
		case <-tick.C:
		}
		r.reapAll(ctx)
	}
}

func (r *Reaper) reapAll(ctx context.Context) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		code := ws.ExitStatus()
		switch {
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		case !ws.Exited():
			continue // stopped/continued: not an exit
		}
		e := Exit{Pid: pid, Status: code, At: time.Now()}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		if !ok {
			r.orphans++
		}
		r.mu.Unlock()
		if ok {
			ch <- e
		} else {
			log.G(ctx).WithField("pid", pid).WithField("status", code).Debug("reaped orphan")
		}
	}
}
