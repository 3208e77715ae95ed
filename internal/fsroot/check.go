package fsroot

import (
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

var (
	checkOnce sync.Once
	checkErr  error
)

// Check reports whether this kernel supports what Root needs: openat2(2)
// with RESOLVE_IN_ROOT (Linux 5.6 and later). Without it kuasar cannot
// confine guest paths race-free and refuses to start; the error names the
// running kernel and the fix. The result is computed once.
func Check() error {
	checkOnce.Do(func() { checkErr = checkProbe(probe) })
	return checkErr
}

// probe makes one openat2 call with the flags Root uses.
func probe() error {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveFlags}
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &how)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// checkProbe turns the probe's error into Check's.
func checkProbe(probe func() error) error {
	err := probe()
	if err == nil {
		return nil
	}
	release := "unknown"
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	switch err {
	case unix.ENOSYS:
		return fmt.Errorf("kernel %s has no openat2(2) (%w), which kuasar needs to resolve guest paths without races: run on Linux 5.6 or later (if a seccomp profile blocks openat2, allow it): %w", release, err, errdefs.ErrFailedPrecondition)
	case unix.EINVAL, unix.E2BIG:
		return fmt.Errorf("kernel %s refuses openat2(2) with RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS (%w), which kuasar needs to resolve guest paths without races: run on Linux 5.6 or later: %w", release, err, errdefs.ErrFailedPrecondition)
	case unix.EPERM, unix.EACCES:
		return fmt.Errorf("openat2(2) is denied on kernel %s (%w), probably by a seccomp profile: allow openat2 for kuasar, which needs it to resolve guest paths without races: %w", release, err, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("probing openat2(2) on kernel %s: %w", release, err)
}
