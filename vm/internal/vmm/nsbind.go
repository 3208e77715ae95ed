package vmm

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// A VMM restored from a snapshot recreates its devices at the paths the
// snapshot names (sockets, console file), the same strings for every VM
// restored from it. StartInNamespace gives each such VMM a mount
// namespace of its own in which those paths lead to that VM's own
// directory: the host's mounts, seen as slaves, plus NSBinds, made in
// the VMM's namespace only (nothing is mounted on the host, and every
// mount dies with the VMM).

// NSBind is one bind mount in a VMM's own mount namespace.
type NSBind struct {
	// Source is the host path bound; Target where it appears (an
	// existing directory or file; Target = Source re-binds in place).
	Source string `json:"source"`
	Target string `json:"target"`
	// ReadOnly makes the bind read-only in the VMM's namespace.
	ReadOnly bool `json:"read_only,omitempty"`
}

// NSArg0 is argv[0] of the namespace helper (see StartInNamespace).
const NSArg0 = "kuasar-vmm-ns"

// nsStatusFD is the helper's status pipe (close-on-exec once it runs).
const nsStatusFD = 3

// StartInNamespace is Start for a VMM in a mount namespace of its own
// with binds applied: a helper (the kuasar-vmm-jail binary or this
// binary re-executed, see HelperName; started as NSArg0,
// cloned into the new namespace) makes the host's mounts slaves, makes
// the binds and execs path. It returns once the VMM runs, or with the
// helper's error; a failure leaves no process behind. The VMM keeps this
// process's credentials and environment (plus its owner's mark).
func StartInNamespace(path string, args []string, logPath string, binds []NSBind) (*Process, error) {
	if !CanJail() {
		return nil, fmt.Errorf("a mount namespace for %s needs root: %w", path, errdefs.ErrFailedPrecondition)
	}
	spec, err := json.Marshal(binds)
	if err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	if err := recordIntent(path, logPath); err != nil {
		return nil, err
	}
	sr, sw, err := os.Pipe()
	if err != nil {
		forget(logPath)
		return nil, err
	}
	defer sr.Close()
	cmd := &exec.Cmd{
		Path:        helperPath(),
		Args:        append([]string{NSArg0, string(spec), path}, args...),
		Env:         append(os.Environ(), procmark.Pair(Owner(logPath))),
		Stdout:      lf,
		Stderr:      lf,
		ExtraFiles:  []*os.File{sw},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWNS},
	}
	p, err := startHelper(cmd, sr, sw, logPath, fmt.Sprintf("start the vmm namespace helper for %s", path), fmt.Sprintf("mount namespace for %s", path))
	if err != nil {
		return nil, err
	}
	crashpoint.Hit("vmm.forked")
	if err := p.recordStarted(path); err != nil {
		p.Kill()
		forget(logPath)
		return nil, err
	}
	return p, nil
}

// runNSHelper runs in the helper, in its new mount namespace: it makes
// the binds and execs path. It returns only on failure.
func runNSHelper(specJSON, path string, args []string) error {
	var binds []NSBind
	if err := json.Unmarshal([]byte(specJSON), &binds); err != nil {
		return fmt.Errorf("bad namespace spec: %w", err)
	}
	runtime.LockOSThread()
	unix.CloseOnExec(nsStatusFD)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / a slave: %w", err)
	}
	for _, b := range binds {
		if !filepath.IsAbs(b.Source) || !filepath.IsAbs(b.Target) {
			return fmt.Errorf("namespace bind %s → %s: paths must be absolute", b.Source, b.Target)
		}
		fd, err := unix.Open(b.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("namespace bind: open %s: %w", b.Source, err)
		}
		err = unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), b.Target, "", unix.MS_BIND, "")
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("namespace bind %s on %s: %w", b.Source, b.Target, err)
		}
		attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
		if b.ReadOnly {
			attr |= unix.MOUNT_ATTR_RDONLY
		}
		if err := setAttr(b.Target, attr, false); err != nil {
			return fmt.Errorf("namespace bind %s: %w", b.Target, err)
		}
	}
	if err := unix.CloseRange(nsStatusFD+1, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	err := unix.Exec(path, append([]string{path}, args...), os.Environ())
	return fmt.Errorf("exec %s: %w", path, err)
}
