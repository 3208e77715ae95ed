// Package reap finds and kills every process that descends from this one,
// daemonised ones included, so that an interrupted benchmark leaves nothing
// running.
package reap

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Why the harness reaps: a suite's `go test` starts test binaries that start
// sandboxers, containerd and QEMU, some of which leave their parent's process
// group or session on purpose (daemons, VMMs). Killing the `go` process, or
// even its process group, does not reach them: they were reparented to PID 1
// and kept running (a 285 MB QEMU per interrupted VM benchmark). The harness
// therefore makes itself a child subreaper, so that every orphaned descendant
// is reparented to it rather than to PID 1, and after each suite (and on
// SIGINT/SIGTERM) it kills and reaps every process that descends from it.

// BecomeSubreaper makes orphaned descendants of this process its children
// (prctl PR_SET_CHILD_SUBREAPER), so that KillDescendants finds them.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w; without it an interrupted suite can leave QEMU or containerd running", err)
	}
	return nil
}

// Descendants returns the pids of the live and zombie processes whose parent
// chain leads to root, read from /proc, with each one's parent.
func Descendants(root int) (map[int]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, err := parentOf(pid)
		if err != nil {
			continue // exited meanwhile
		}
		children[ppid] = append(children[ppid], pid)
	}
	out := map[int]int{}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if _, seen := out[c]; !seen {
				out[c] = p
				queue = append(queue, c)
			}
		}
	}
	return out, nil
}

// parentOf reads a process's parent pid from /proc/PID/stat. The command name
// may hold spaces and parentheses, so the fields are taken after its last ')'.
func parentOf(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.Atoi(f[1])
}

// KillDescendants SIGKILLs every process descending from this one and reaps
// those that become its children, until none is left or timeout passes. It
// returns how many processes it killed and an error naming the survivors.
// It must not run while an exec.Cmd of this process is being waited for: it
// reaps any child.
func KillDescendants(timeout time.Duration) (int, error) {
	self := os.Getpid()
	killed := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		reapChildren()
		ds, err := Descendants(self)
		if err != nil {
			return len(killed), err
		}
		if len(ds) == 0 {
			return len(killed), nil
		}
		if time.Now().After(deadline) {
			pids := make([]string, 0, len(ds))
			for p := range ds {
				pids = append(pids, strconv.Itoa(p))
			}
			return len(killed), fmt.Errorf("processes %s started by the benchmarks survive SIGKILL after %v; kill them by hand", strings.Join(pids, ", "), timeout)
		}
		for pid, ppid := range ds {
			if err := killIfChildOf(pid, ppid); err == nil {
				killed[pid] = true
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval between /proc scans
	}
}

// killIfChildOf SIGKILLs pid through a pidfd after checking, on that pidfd's
// process, that its parent is still ppid, so that a pid reused by an
// unrelated process is never signalled.
func killIfChildOf(pid, ppid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if got, err := parentOf(pid); err != nil || got != ppid {
		return errors.New("not the process found in /proc any more")
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

// reapChildren collects the exit status of every child that has exited, so
// that killed orphans do not linger as zombies.
func reapChildren() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
