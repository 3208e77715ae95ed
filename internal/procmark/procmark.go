// Package procmark marks the helper processes a sandbox owns (VMMs,
// virtiofsd) so that a sandboxer restarted after a crash can find every one
// of them, records each before it is started, and kills them safely.
//
// A marked process carries Env=<owner> in its environment, where owner is
// the directory of the sandbox that started it (a VM's state directory).
// The environment of a process is fixed at exec, readable by root through
// /proc/<pid>/environ and not changed by the process's own setenv, so the
// mark survives the re-exec of the VMM jail and a VMM that drops its
// privileges. A process is identified by its pid and its start time (field
// 22 of /proc/<pid>/stat, in clock ticks since boot): a pid the kernel
// reused for another process has another start time, and every kill goes
// through a pidfd opened before the identity is checked again, so a signal
// never reaches a process that merely inherited the pid.
//
// A Record is written (atomically, internal/atomicfile) before its process
// is started, with pid 0, and again with the pid and start time once it
// runs: a crash in between leaves a record that names the owner, and the
// owner's mark finds the process.
package procmark

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/atomicfile"
)

// Env is the environment variable that marks a process as owned by a
// sandbox; its value is the owner directory.
const Env = "KUASAR_OWNER"

// Pair returns the "Env=owner" entry to put in a process's environment.
func Pair(owner string) string { return Env + "=" + owner }

// Proc is one running process.
type Proc struct {
	// Pid is the process id.
	Pid int `json:"pid"`
	// StartTime is the process's start time in clock ticks after boot
	// (/proc/<pid>/stat field 22); with Pid it names the process for good.
	StartTime uint64 `json:"start_time"`
	// Owner is the value of the process's mark ("" when unmarked).
	Owner string `json:"owner,omitempty"`
}

// StartTime reads the start time of pid from /proc/<pid>/stat. A process
// that is gone is ErrNotFound.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return 0, fmt.Errorf("process %d is gone: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return parseStartTime(b)
}

// parseStartTime reads field 22 of a /proc/<pid>/stat line. The command
// name (field 2) is in parentheses and may hold spaces and ')': the fields
// after it are counted from its last ')'.
func parseStartTime(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat line without a command name: %w", errdefs.ErrInvalidArgument)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc stat line with %d fields after the name, want at least 20: %w", len(f), errdefs.ErrInvalidArgument)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// OwnerOf returns the mark of pid ("" when it has none). Reading another
// user's environment needs root (or the same uid).
func OwnerOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return "", fmt.Errorf("process %d is gone: %w", pid, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	prefix := []byte(Env + "=")
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			return string(v), nil
		}
	}
	return "", nil
}

// Identify returns pid with its start time and mark.
func Identify(pid int) (Proc, error) {
	st, err := StartTime(pid)
	if err != nil {
		return Proc{}, err
	}
	owner, err := OwnerOf(pid)
	if err != nil {
		return Proc{}, err
	}
	return Proc{Pid: pid, StartTime: st, Owner: owner}, nil
}

// Scan lists every process whose mark is under, or equal to, dir. Zombies
// (an empty environ) and processes that exit during the scan are skipped.
func Scan(dir string) ([]Proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	self := os.Getpid()
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		owner, err := OwnerOf(pid)
		if err != nil || !Under(owner, dir) {
			continue
		}
		st, err := StartTime(pid)
		if err != nil {
			continue
		}
		out = append(out, Proc{Pid: pid, StartTime: st, Owner: owner})
	}
	return out, nil
}

// Under reports whether owner is dir or a path below it.
func Under(owner, dir string) bool {
	return owner != "" && (owner == dir || strings.HasPrefix(owner, dir+"/"))
}

// KillTimeout bounds how long Kill waits for a killed process to be gone.
const KillTimeout = 10 * time.Second

// Kill SIGKILLs p and waits until it has exited: it opens a pidfd, checks
// through it that the pid still has p's start time (and mark, when p has
// one), signals through the pidfd and polls it (readable once the process
// has exited). A process already gone, or a pid now held by another
// process, is not an error: there is nothing of p's to kill.
func Kill(p Proc) error {
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open(%d): %w", p.Pid, err)
	}
	defer unix.Close(fd)
	// The pidfd pins the process: from here the pid cannot be reused
	// under us, so this check names the process we signal.
	cur, err := Identify(p.Pid)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.StartTime != p.StartTime || (p.Owner != "" && cur.Owner != p.Owner) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process %d: %w", p.Pid, err)
	}
	return waitFD(fd, p.Pid, KillTimeout)
}

// waitFD waits until the process of pidfd fd has exited, up to timeout.
func waitFD(fd, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return fmt.Errorf("process %d still runs %v after SIGKILL: %w", pid, timeout, errdefs.ErrUnavailable)
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd of %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
}

// Watch returns a channel closed once p has exited (or at once when it is
// already gone or its pid now names another process). It holds a pidfd,
// so the wait is an event, never a poll of /proc, and a reused pid cannot
// fool it.
func Watch(p Proc) <-chan struct{} {
	done := make(chan struct{})
	fd, err := unix.PidfdOpen(p.Pid, 0)
	if err != nil {
		close(done)
		return done
	}
	if st, err := StartTime(p.Pid); err != nil || st != p.StartTime {
		unix.Close(fd)
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer unix.Close(fd)
		for {
			_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
			if !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	return done
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's start time: 100
// on every Linux architecture (the kernel converts to it for user space).
const clockTicks = 100

// Now is the current time in the unit and clock of Proc.StartTime (clock
// ticks since boot, CLOCK_BOOTTIME): a process whose StartTime is at or
// after a Now was started after it. Should the clock not be readable, it
// is the largest value (every process counts as started before).
func Now() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return ^uint64(0)
	}
	return uint64(ts.Nano()) / (uint64(time.Second) / clockTicks)
}

// Alive reports whether p (pid and start time) still runs.
func Alive(p Proc) bool {
	st, err := StartTime(p.Pid)
	return err == nil && st == p.StartTime
}

// Record is what is kept on disk about one owned process.
type Record struct {
	// Owner is the process's mark.
	Owner string `json:"owner"`
	// Path is the binary started.
	Path string `json:"path"`
	// Pid and StartTime are 0 until the process runs.
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Proc is the recorded process.
func (r Record) Proc() Proc { return Proc{Pid: r.Pid, StartTime: r.StartTime, Owner: r.Owner} }

// RecordExt is the suffix of record files.
const RecordExt = ".proc"

// Write stores r at path atomically (mode 0600). durable syncs the file
// and its directory (state on a disk; tmpfs state needs no sync).
func Write(path string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600, durable(filepath.Dir(path)))
}

// Read loads the record at path.
func Read(path string) (Record, error) {
	var r Record
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("process record %s: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("process record %s: %v: %w", path, err, errdefs.ErrDataLoss)
	}
	return r, nil
}

// tmpfsMagic is TMPFS_MAGIC from statfs(2).
const tmpfsMagic = 0x01021994

func durable(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) != nil || st.Type != tmpfsMagic
}

// Reap kills every process marked with an owner under dir (see Scan and
// Kill) and returns what it killed.
func Reap(dir string) ([]Proc, error) {
	procs, err := Scan(dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, p := range procs {
		if err := Kill(p); err != nil {
			errs = append(errs, err)
		}
	}
	return procs, errors.Join(errs...)
}
