package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// Dead runs. Each `kuasar run` works in a private directory
// (<parent>/kuasar-run-*) that holds its sandbox: a VM's state directory,
// QEMU's sockets, the 9p share and its mounts. A run SIGKILLed (or killed
// by the OOM killer) never removes it, and its QEMU, reparented to init,
// runs on. So every run records itself as its directory's owner
// (runOwnerName: its pid and start time, internal/procmark) before the
// sandbox starts, and the next run with the same parent reaps every
// directory whose owner is gone: the processes marked with a path below it
// (every VMM is, vm/internal/vmm) are killed through a pidfd, its mounts
// detached, its files removed.
//
// A directory is made and its owner recorded under a shared flock of the
// parent directory, and reaped under an exclusive one, so a reaper never
// takes a run that is being set up for a dead one.

const (
	// runPrefix names run directories.
	runPrefix = "kuasar-run-"
	// runOwnerName is the owner record in a run directory.
	runOwnerName = "owner" + procmark.RecordExt
)

// lockRuns takes parent's runs lock (shared or exclusive): a flock of
// the directory itself, so no lock file is left. The returned function
// releases it.
func lockRuns(parent string, how int) (func(), error) {
	f, err := os.OpenFile(parent, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock the run directories in %s: %w", parent, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// newRunDir makes a private run directory in parent and records this
// process as its owner.
func newRunDir(parent string) (dir string, retErr error) {
	unlock, err := lockRuns(parent, unix.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer unlock()
	dir, err = os.MkdirTemp(parent, runPrefix)
	if err != nil {
		return "", err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	self, err := procmark.Identify(os.Getpid())
	if err != nil {
		return "", err
	}
	exe, _ := os.Executable()
	if err := procmark.Write(filepath.Join(dir, runOwnerName), procmark.Record{Owner: dir, Path: exe, Pid: self.Pid, StartTime: self.StartTime}); err != nil {
		return "", fmt.Errorf("record the owner of %s: %w", dir, err)
	}
	return dir, nil
}

// reapDeadRuns cleans up every run directory in parent whose owner is
// gone and returns the directories it removed. Directories of other users
// are left alone, and so are those of live runs.
func reapDeadRuns(ctx context.Context, parent string) ([]string, error) {
	ents, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cands []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), runPrefix) {
			cands = append(cands, filepath.Join(parent, e.Name()))
		}
	}
	if len(cands) == 0 {
		return nil, nil
	}
	unlock, err := lockRuns(parent, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var reaped []string
	var errs []error
	for _, dir := range cands {
		if !deadRun(dir) {
			continue
		}
		if err := reapRun(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		log.G(ctx).WithField("dir", dir).Warn("removed the state of a kuasar run that died (its VMM killed, its mounts detached)")
		reaped = append(reaped, dir)
	}
	return reaped, errors.Join(errs...)
}

// deadRun reports whether run directory dir belongs to this user and its
// recorded owner no longer runs (a directory without a record was made by
// a run that died before it wrote one: records are written under the
// shared lock the caller excludes).
func deadRun(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return false
	}
	r, err := procmark.Read(filepath.Join(dir, runOwnerName))
	if errdefs.IsNotFound(err) {
		return true
	}
	if err != nil {
		return false // unreadable: never guess
	}
	return r.Pid == 0 || r.Owner != dir || !procmark.Alive(r.Proc())
}

// reapRun kills the processes marked below dir, detaches the mounts below
// it (deepest first) and removes it; nothing is removed while a mount is
// left, which could be a container's real rootfs.
func reapRun(dir string) error {
	if _, err := procmark.Reap(dir); err != nil {
		return fmt.Errorf("dead run %s: kill its processes: %w", dir, err)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	sort.Slice(mounts, func(a, b int) bool { return len(mounts[a].Mountpoint) > len(mounts[b].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("dead run %s: unmount %s: %w", dir, m.Mountpoint, err)
		}
	}
	if err := removeUnmounted(dir); err != nil {
		return fmt.Errorf("dead run %s: %w", dir, err)
	}
	return nil
}
