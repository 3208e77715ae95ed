package vmm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// HelperName is the file name of the dedicated jail helper binary
// (cmd/kuasar-vmm-jail): installed next to the sandboxer or the CLI, it
// is what StartJailed and StartInNamespace run instead of re-executing
// the calling binary, whose start (a big Go runtime image, every package
// init) costs tens of milliseconds on each VMM start.
const HelperName = "kuasar-vmm-jail"

// HelperEnv names an explicit helper binary (for test binaries and
// unusual layouts); it takes precedence over the one next to the
// running executable.
const HelperEnv = "KUASAR_VMM_HELPER"

// selfExe is the fallback helper: this binary, re-executed.
const selfExe = "/proc/self/exe"

// helperPath returns the binary the helpers run: resolved once per
// process (see findHelper).
var helperPath = sync.OnceValue(findHelper)

// findHelper returns the dedicated helper (HelperEnv, else HelperName
// next to the running executable) when it is safe to execute as root,
// and /proc/self/exe otherwise, logging a warning when a helper exists
// but is refused, or when HelperEnv names none.
func findHelper() string {
	cand := os.Getenv(HelperEnv)
	explicit := cand != ""
	if !explicit {
		exe, err := os.Executable()
		if err != nil {
			return selfExe
		}
		cand = filepath.Join(filepath.Dir(exe), HelperName)
	}
	p, err := checkHelper(cand)
	if err != nil {
		if explicit || !os.IsNotExist(err) {
			log.G(context.Background()).WithError(err).Warnf("vmm helper %s refused, re-executing this binary instead (slower VMM starts)", cand)
		}
		return selfExe
	}
	log.G(context.Background()).Debugf("vmm helper: %s", p)
	return p
}

// checkHelper resolves path's symlinks once and checks that the file it
// names is a regular executable file owned by root, not writable by
// group or others, below directories with the same guarantees (or
// root's sticky ones): nobody but root can change or replace what this
// root process will execute. It returns the resolved path.
func checkHelper(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(real, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: real, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", fmt.Errorf("%s is not a regular file", real)
	case st.Mode&0o111 == 0:
		return "", fmt.Errorf("%s is not executable", real)
	}
	if err := rootOwned(real, st); err != nil {
		return "", err
	}
	// Every directory up to / as well: one that someone else could
	// write to would let them swap what lies below it after this check
	// (a sticky one, like /tmp, lets them rename only their own entries).
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if err := unix.Stat(dir, &st); err != nil {
			return "", &os.PathError{Op: "stat", Path: dir, Err: err}
		}
		if st.Mode&unix.S_ISVTX != 0 && st.Uid == 0 {
			st.Mode &^= 0o022
		}
		if err := rootOwned(dir, st); err != nil {
			return "", err
		}
		if dir == "/" {
			return real, nil
		}
	}
}

func rootOwned(path string, st unix.Stat_t) error {
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root: chown root it", path, st.Uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o): chmod go-w it", path, st.Mode&0o7777)
	}
	return nil
}

// HelperMain turns this process into the jail or namespace helper when
// argv[0] asks for one (JailArg0, NSArg0) and never returns then; it
// returns otherwise. Every binary that imports this package runs it at
// init; cmd/kuasar-vmm-jail is nothing else.
func HelperMain() {
	if len(os.Args) < 3 {
		return
	}
	var err error
	var st *os.File
	switch os.Args[0] {
	case JailArg0:
		err = runJailHelper(os.Args[1], os.Args[2], os.Args[3:])
		st = os.NewFile(statusFD, "status")
	case NSArg0:
		err = runNSHelper(os.Args[1], os.Args[2], os.Args[3:])
		st = os.NewFile(nsStatusFD, "status")
	default:
		return
	}
	// Only reached on failure: report it to the parent and exit. The
	// log names the binary that ran the helper.
	exe, _ := os.Executable()
	fmt.Fprintf(st, "%v", err)
	fmt.Fprintf(os.Stderr, "%s (%s): %v\n", os.Args[0], exe, err)
	os.Exit(126)
}

func init() { HelperMain() }
