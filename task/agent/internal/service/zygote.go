package service

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
)

// helperZygote is the second argument that makes RunHelper a zygote: it
// starts with /dev/null as stdio and receives the container's stdio over
// the control socket (SCM_RIGHTS) together with its config.
const helperZygote = "zygote"

// zygoteParked is the line a zygote writes on its control socket once its
// Go runtime and config decoder are up and it waits for its stdio: the
// agent then knows the guest has nothing left to do until a request
// comes (WaitZygoteParked), and Create that its config is read at once.
const zygoteParked = "parked\n"

// defaultZygoteFlags are the namespaces of the first pre-forked helper: what
// a container asks for when it shares nothing with the pod (containerd's
// default spec, the VM benchmarks). Later zygotes take the namespaces of the
// last container created, so a pod whose containers share uts/ipc with the
// sandbox gets matching zygotes from its second container on.
const defaultZygoteFlags = uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)

// zygoteRefillDelay is how long after a container's Start the replacement
// zygote is forked: on a one-vCPU guest the fork and the new helper's Go
// runtime start would otherwise compete with sending the Start reply and
// with the container's own exec.
const zygoteRefillDelay = 20 * time.Millisecond

// WithZygote keeps one set-up helper pre-forked in fresh namespaces, waiting
// for its config, so that Create skips the fork, exec and Go runtime start
// of a helper (tens of milliseconds under emulation). The zygote is forked
// by Prewarm (AgentService.SetupSandbox calls it once the sandbox mounts are
// in place) and again after each container start. A Create whose namespaces
// differ from the zygote's takes the cold path. Shutdown kills it.
func WithZygote() Option { return func(s *Service) { s.zygoteOn = true } }

// zygote is a pre-forked helper waiting for its config.
type zygote struct {
	pid   int
	flags uintptr
	ctrl  *os.File
	exit  <-chan guestinit.Exit
	// parked is closed once the zygote reported zygoteParked or failed
	// to (parkErr); until then only watchParked reads ctrl.
	parked  chan struct{}
	parkErr error
}

// watchParked reads the zygote's zygoteParked line, then closes parked.
// It reads exactly that many bytes: the zygote writes nothing else before
// it receives its config.
func (z *zygote) watchParked() {
	defer close(z.parked)
	buf := make([]byte, len(zygoteParked))
	if _, err := io.ReadFull(z.ctrl, buf); err != nil {
		z.parkErr = fmt.Errorf("zygote %d did not report parked: %w", z.pid, err)
	} else if string(buf) != zygoteParked {
		z.parkErr = fmt.Errorf("zygote %d reported %q, want %q", z.pid, buf, zygoteParked)
	}
}

// waitParked waits up to timeout for the zygote to be parked.
func (z *zygote) waitParked(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-z.parked:
		return z.parkErr
	case <-t.C:
		return fmt.Errorf("zygote %d not parked after %v", z.pid, timeout)
	}
}

// alive reports whether the zygote has not been reaped.
func (z *zygote) alive() bool {
	select {
	case e := <-z.exit:
		// Put it back for whoever watches next.
		ch := make(chan guestinit.Exit, 1)
		ch <- e
		z.exit = ch
		return false
	default:
		return true
	}
}

// kill ends an unused zygote and waits (bounded) for the reaper to collect it.
func (z *zygote) kill() {
	_ = unix.Kill(z.pid, unix.SIGKILL)
	z.ctrl.Close()
	select {
	case <-z.exit:
	case <-time.After(5 * time.Second):
	}
}

// Prewarm forks a zygote when WithZygote is set and none with the
// namespaces of the next container is waiting; otherwise it does nothing.
// The zygote's mount namespace is a copy of the agent's at this moment: it
// sees later mounts only if the agent's mounts are shared
// (guestinit.ShareMounts, as the guest agent does at boot).
func (s *Service) Prewarm(ctx context.Context) {
	if s == nil || !s.zygoteOn {
		return
	}
	s.refillZygote(ctx)
}

// afterMounts is called when the agent mounted something new: a waiting
// zygote whose mount namespace cannot receive it is replaced.
func (s *Service) afterMounts(ctx context.Context) {
	if s == nil || !s.zygoteOn {
		return
	}
	if !rootShared() {
		s.zmu.Lock()
		if s.zyg != nil {
			s.zyg.kill()
			s.zyg = nil
		}
		s.zmu.Unlock()
	}
	s.refillZygote(ctx)
}

// rootShared reports whether the agent's / is a shared mount, so that
// mounts made below it propagate into namespaces copied from it.
func rootShared() bool {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter("/"))
	if err != nil || len(ms) == 0 {
		return false
	}
	for _, o := range strings.Fields(ms[0].Optional) {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// refillZygote forks a zygote with the namespaces of the last container
// created unless a matching one is waiting.
func (s *Service) refillZygote(ctx context.Context) {
	s.zmu.Lock()
	defer s.zmu.Unlock()
	if s.zclosed {
		return
	}
	if s.zyg != nil {
		if s.zyg.flags == s.zflags && s.zyg.alive() {
			return
		}
		s.zyg.kill()
		s.zyg = nil
	}
	s.spawnZygoteLocked(ctx)
}

func (s *Service) spawnZygoteLocked(ctx context.Context) {
	flags := s.zflags
	t0 := time.Now()
	pid, exit, ctrl, err := s.spawnHelper(flags, true, nil, nil, nil)
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot pre-fork a container set-up helper; containers take the cold path")
		return
	}
	s.zyg = &zygote{pid: pid, flags: flags, ctrl: ctrl, exit: exit, parked: make(chan struct{})}
	go s.zyg.watchParked()
	log.G(ctx).WithField("pid", pid).WithField("took", time.Since(t0)).Debug("zygote forked")
}

// A zygote is speculative work: it is forked (at boot, after each
// container's start) in case another container comes, and must never
// slow down the work at hand on a guest of one or two vCPUs — the
// container just started, the agent's replies, the exit that follows
// under emulation a Go runtime start of 100 ms or more. So it starts
// under SCHED_IDLE (startIdle), running only when nothing else wants the
// CPU, and is raised back to SCHED_NORMAL when a Create takes it
// (promote), before anything waits for it; the container's process is
// exec'd from a SCHED_NORMAL thread (RunHelper), so it never inherits
// the idle policy.

// startIdle runs start (which forks) on a thread of its own set to
// SCHED_IDLE, so the child and every thread it makes inherit that policy.
// The thread is never handed back to the Go runtime: it exits with its
// goroutine, and no agent work ever runs at idle priority. It is also set
// back to SCHED_NORMAL before startIdle returns: the thread's exit comes
// some time after its goroutine's, and until then it must not be an idle
// thread of the agent. Where the policy cannot be set, start runs all the
// same.
func startIdle(start func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		idle := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_IDLE}, 0) == nil
		err := start()
		if idle {
			_ = unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0)
		}
		errc <- err
	}()
	return <-errc
}

// promote sets every thread of process pid to SCHED_NORMAL (nice 0),
// again until a pass finds none left at another policy (a thread the
// process made meanwhile from one not yet promoted).
func promote(pid int) {
	for pass := 0; pass < 5; pass++ {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			return // gone
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if a, err := unix.SchedGetAttr(tid, 0); err == nil && a.Policy == unix.SCHED_NORMAL && a.Nice == 0 {
				continue
			}
			if unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0) == nil {
				changed = true
			}
		}
		if !changed {
			return
		}
	}
}

// takeZygote hands out the waiting zygote when its namespaces are exactly
// flags, and remembers flags for the next one, raised to SCHED_NORMAL.
func (s *Service) takeZygote(flags uintptr) *zygote {
	if !s.zygoteOn {
		return nil
	}
	s.zmu.Lock()
	defer s.zmu.Unlock()
	s.zflags = flags
	z := s.zyg
	if z == nil || z.flags != flags {
		return nil
	}
	s.zyg = nil
	if !z.alive() {
		z.ctrl.Close()
		return nil
	}
	promote(z.pid)
	return z
}

// scheduleRefill forks the next zygote shortly (see zygoteRefillDelay).
func (s *Service) scheduleRefill(ctx context.Context) {
	if !s.zygoteOn {
		return
	}
	ctx = context.WithoutCancel(ctx)
	time.AfterFunc(zygoteRefillDelay, func() { s.refillZygote(ctx) })
}

// closeZygote kills the waiting zygote and forks no more.
func (s *Service) closeZygote() {
	s.zmu.Lock()
	defer s.zmu.Unlock()
	s.zclosed = true
	if s.zyg != nil {
		s.zyg.kill()
		s.zyg = nil
	}
}

// WaitZygoteParked waits up to timeout until the waiting zygote (if any)
// has started and waits for its config. The guest agent calls it before
// it reports itself ready on the console, which is when a VM template is
// saved: a template then holds a parked zygote, so no restored clone
// spends its first requests finishing the zygote's start-up (its Go
// runtime under emulation), and each clone's first Create finds it
// ready. The zygote holds nothing of any tenant: it receives its config
// only at Create, and execs the container's process, leaving nothing of
// itself.
func (s *Service) WaitZygoteParked(timeout time.Duration) error {
	s.zmu.Lock()
	z := s.zyg
	s.zmu.Unlock()
	if z == nil {
		return nil
	}
	return z.waitParked(timeout)
}

// zygotePid returns the pid of the waiting zygote, 0 if none (tests).
func (s *Service) zygotePid() int {
	s.zmu.Lock()
	defer s.zmu.Unlock()
	if s.zyg == nil {
		return 0
	}
	return s.zyg.pid
}

// sendToZygote writes the config line with the container's stdio attached
// (a missing stream becomes /dev/null, as for the cold path).
func sendToZygote(ctrl *os.File, line []byte, in, out, errw *os.File) error {
	var fds []int
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for _, f := range []*os.File{in, out, errw} {
		if f == nil {
			n, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			opened = append(opened, n)
			f = n
		}
		fds = append(fds, int(f.Fd()))
	}
	sc, err := ctrl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = sc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), line[:1], unix.UnixRights(fds...), nil, 0)
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("pass stdio to the set-up helper: %w", err)
	}
	if _, err := ctrl.Write(line[1:]); err != nil {
		return err
	}
	return nil
}

// receiveStdio runs in a zygote: it waits for the first byte of the config
// with the container's stdio attached, installs those as fds 0-2 and
// returns the byte.
func receiveStdio(ctrlFd int) ([]byte, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(3*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(ctrlFd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("control socket closed")
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return nil, fmt.Errorf("no stdio with the config")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 3 {
			return nil, fmt.Errorf("want 3 stdio descriptors, got %d", len(fds))
		}
		for i, fd := range fds {
			if err := unix.Dup3(fd, i, 0); err != nil {
				return nil, fmt.Errorf("install stdio %d: %w", i, err)
			}
			unix.Close(fd)
		}
		return buf[:n], nil
	}
}
