package service

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// HelperInit is the hidden first argument with which the agent re-executes
// itself to set up a container's root file system inside fresh namespaces.
// A binary that embeds this package must call RunHelper early in main (and a
// test binary in TestMain) when os.Args[1] == HelperInit.
const HelperInit = "__kuasar_init"

// helperConfig is what the agent sends the helper over the control socket.
type helperConfig struct {
	Rootfs         string              `json:"rootfs"`
	ReadonlyRootfs bool                `json:"readonly_rootfs,omitempty"`
	Hostname       string              `json:"hostname,omitempty"`
	SetHostname    bool                `json:"set_hostname,omitempty"`
	Mounts         []specs.Mount       `json:"mounts,omitempty"`
	Args           []string            `json:"args"`
	Env            []string            `json:"env,omitempty"`
	Cwd            string              `json:"cwd,omitempty"`
	UID            uint32              `json:"uid"`
	GID            uint32              `json:"gid"`
	Groups         []uint32            `json:"groups,omitempty"`
	MaskedPaths    []string            `json:"masked_paths,omitempty"`
	ReadonlyPaths  []string            `json:"readonly_paths,omitempty"`
	Rlimits        []specs.POSIXRlimit `json:"rlimits,omitempty"`
}

// Control protocol, one line each: agent → helper: config JSON; helper →
// agent: "ok" or "error: <msg>"; agent → helper: "start"; then the helper
// execs (its end is close-on-exec, so the agent reads EOF) or answers
// "error: <msg>".
const (
	ctrlOK    = "ok"
	ctrlStart = "start"
	ctrlErr   = "error: "
)

// RunHelper runs the HelperInit subcommand and never returns: it exits the
// process on failure and execs the container process on success.
func RunHelper() {
	ctrl := os.NewFile(3, "ctrl")
	var r *bufio.Reader
	if len(os.Args) > 2 && os.Args[2] == helperZygote {
		// Pre-forked: build the config decoder while nothing waits for
		// it, then wait for the container's stdio and config.
		_ = json.Unmarshal([]byte(`{"mounts":[{}],"rlimits":[{}]}`), &helperConfig{})
		if _, err := ctrl.WriteString(zygoteParked); err != nil {
			os.Exit(126) // the agent went away
		}
		first, err := receiveStdio(3)
		if err != nil {
			os.Exit(126) // killed, or the agent went away
		}
		// Forked at idle priority (startIdle); the agent raised it when
		// it took it. The container's process is exec'd from this
		// thread, so make sure it is back at SCHED_NORMAL while still
		// root (an unprivileged thread may not leave SCHED_IDLE).
		runtime.LockOSThread()
		_ = unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_NORMAL}, 0)
		r = bufio.NewReader(io.MultiReader(bytes.NewReader(first), ctrl))
	} else {
		r = bufio.NewReader(ctrl)
	}
	fail := func(err error) {
		fmt.Fprintf(ctrl, "%s%s\n", ctrlErr, strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(127)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		os.Exit(126)
	}
	t0 := time.Now()
	var cfg helperConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		fail(fmt.Errorf("decode helper config: %w", err))
	}
	if err := setupRoot(&cfg); err != nil {
		fail(err)
	}
	bin, err := lookPath("/", cfg.Args[0], cfg.Env)
	if err != nil {
		fail(err)
	}
	fmt.Fprintf(ctrl, "%s setup=%s\n", ctrlOK, time.Since(t0))
	// Apply the process attributes while the reply travels to the host
	// and Start comes back; a failure is reported at Start, as before.
	prepErr := prepareProcess(&cfg)
	cmd, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(cmd) != ctrlStart {
		os.Exit(126) // the agent went away or aborted the create
	}
	if prepErr != nil {
		fail(prepErr)
	}
	unix.CloseOnExec(int(ctrl.Fd()))
	if err := syscall.Exec(bin, cfg.Args, cfg.Env); err != nil {
		fail(fmt.Errorf("exec %s: %w", bin, err))
	}
}

// prepareProcess sets the rlimits, groups, gid, uid and cwd of the
// container process (the helper itself, which then execs it).
func prepareProcess(cfg *helperConfig) error {
	for _, rl := range cfg.Rlimits {
		res, ok := rlimitNames[rl.Type]
		if !ok {
			return fmt.Errorf("process.rlimits: unknown type %q; use RLIMIT_NOFILE, RLIMIT_NPROC, ...", rl.Type)
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
			return fmt.Errorf("process.rlimits %s soft %d hard %d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	if err := syscall.Setgroups(intSlice(cfg.Groups)); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(cfg.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", cfg.GID, err)
	}
	if err := syscall.Setuid(int(cfg.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", cfg.UID, err)
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := os.Chdir(cwd); err != nil {
		return fmt.Errorf("process.cwd %q: %w; the directory must exist in the rootfs", cwd, err)
	}
	return nil
}

func intSlice(u []uint32) []int {
	out := make([]int, len(u))
	for i, v := range u {
		out[i] = int(v)
	}
	return out
}

// lookPath finds name like execvp would, inside root, using PATH from env
// and returns the path as seen from inside root.
func lookPath(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !path.IsAbs(p) {
			p = "/" + p
		}
		if err := isExecutable(root, p); err != nil {
			return "", fmt.Errorf("process.args[0] %q: %w", name, err)
		}
		return name, nil
	}
	pathEnv := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, name)
		if isExecutable(root, p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("process.args[0] %q: executable not found in PATH %q inside the container rootfs: %w", name, pathEnv, os.ErrNotExist)
}

func isExecutable(root, p string) error {
	full := p
	if root != "/" {
		// Inside the helper, after pivot_root or chroot, the kernel keeps
		// every lookup inside the container already (and a walk over 9p
		// costs a round trip per component); from outside, resolve here.
		var err error
		if full, err = securejoin.SecureJoin(root, p); err != nil {
			return err
		}
	}
	st, err := os.Stat(full)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file: %w", p, os.ErrPermission)
	}
	return nil
}

// setupRoot runs in the helper, in its new mount namespace: it mounts what
// the spec asks for inside the rootfs (every destination resolved inside it)
// and pivots into it.
func setupRoot(cfg *helperConfig) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := cfg.Rootfs
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", root, err)
	}
	haveProc, haveDev := false, false
	for _, m := range cfg.Mounts {
		switch path.Clean(m.Destination) {
		case "/proc":
			haveProc = true
		case "/dev":
			haveDev = true
		}
	}
	mounts := cfg.Mounts
	if !haveProc {
		mounts = append([]specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}}}, mounts...)
	}
	if !haveDev {
		mounts = append([]specs.Mount{{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}}}, mounts...)
	}
	devIsTmpfs := false
	for _, m := range mounts {
		if err := mountInRoot(root, m); err != nil {
			return err
		}
		if path.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			devIsTmpfs = true
		}
	}
	if devIsTmpfs {
		if err := populateDev(root); err != nil {
			return err
		}
	}
	if err := maskPaths(root, cfg.MaskedPaths, cfg.ReadonlyPaths); err != nil {
		return err
	}
	if cfg.SetHostname && cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
		}
	}
	if err := pivotRoot(root); err != nil {
		return err
	}
	if cfg.ReadonlyRootfs {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount rootfs read-only: %w", err)
		}
	}
	return nil
}

// pivotRoot makes root the process's root. pivot_root(2) refuses to move
// away from the initramfs (EINVAL when / is the kernel's rootfs), which is
// exactly where the agent runs in a micro-VM, so it falls back to moving the
// rootfs mount over / and chroot-ing into it (runc's --no-pivot).
func pivotRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir rootfs: %w", err)
	}
	if os.Getenv(envNoPivot) == "1" {
		return moveRoot(root)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return moveRoot(root)
		}
		return fmt.Errorf("pivot_root into %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	return unix.Chdir("/")
}

var rlimitNames = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": 10,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15, "RLIMIT_SIGPENDING": 11, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// maskPaths applies linux.maskedPaths (files get /dev/null bound over them,
// directories an empty read-only tmpfs) and linux.readonlyPaths (bind
// remounted read-only), each resolved inside root; paths that do not exist
// in the container are skipped, as runc does.
func maskPaths(root string, masked, readonly []string) error {
	for _, p := range readonly {
		dest, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return fmt.Errorf("linux.readonlyPaths %q: %w", p, err)
		}
		if _, err := os.Lstat(dest); err != nil {
			continue
		}
		if err := unix.Mount(dest, dest, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("linux.readonlyPaths %q: bind: %w", p, err)
		}
		if err := unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			if err := unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("linux.readonlyPaths %q: remount read-only: %w", p, err)
			}
		}
	}
	for _, p := range masked {
		dest, err := securejoin.SecureJoin(root, p)
		if err != nil {
			return fmt.Errorf("linux.maskedPaths %q: %w", p, err)
		}
		st, err := os.Stat(dest)
		if err != nil {
			continue
		}
		if st.IsDir() {
			err = unix.Mount("tmpfs", dest, "tmpfs", unix.MS_RDONLY, "size=0k")
		} else {
			err = unix.Mount("/dev/null", dest, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("linux.maskedPaths %q: %w", p, err)
		}
	}
	return nil
}

// envNoPivot, set to 1 in the helper's environment, forces moveRoot (tests
// use it to cover the initramfs path on a host).
const envNoPivot = "KUASAR_NO_PIVOT"

func moveRoot(root string) error {
	if err := unix.Mount(root, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move rootfs %s over /: %w", root, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into %s: %w", root, err)
	}
	return unix.Chdir("/")
}

// mountInRoot performs one spec mount with its destination resolved inside
// root, so a symlink in the image cannot redirect it outside.
func mountInRoot(root string, m specs.Mount) error {
	if !path.IsAbs(m.Destination) {
		return fmt.Errorf("mount destination %q is not absolute; use an absolute path inside the container: %w", m.Destination, os.ErrInvalid)
	}
	dest, err := securejoin.SecureJoin(root, m.Destination)
	if err != nil {
		return fmt.Errorf("resolve mount destination %q inside rootfs: %w", m.Destination, err)
	}
	flags, pflags, data, bind := parseMountOptions(m.Options)
	if m.Type == "bind" {
		bind = true
	}
	switch m.Type {
	case "cgroup", "cgroup2":
		// The guest gives containers no cgroup of their own; skip rather
		// than expose the guest's hierarchy.
		return nil
	}
	if bind {
		st, err := os.Stat(m.Source)
		if errors.Is(err, os.ErrNotExist) {
			// Host paths (e.g. /etc/hosts prepared by CRI on the host)
			// that the forwarder did not share into the guest.
			return nil
		}
		if err != nil {
			return fmt.Errorf("bind mount source %q: %w", m.Source, err)
		}
		if err := mkTarget(dest, st.IsDir()); err != nil {
			return fmt.Errorf("create mount point %q: %w", m.Destination, err)
		}
		// Re-resolve: mkTarget may have created components.
		if dest, err = securejoin.SecureJoin(root, m.Destination); err != nil {
			return err
		}
		if err := unix.Mount(m.Source, dest, "", unix.MS_BIND|(flags&unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.Source, m.Destination, err)
		}
		if flags&^unix.MS_REC != 0 {
			if err := unix.Mount("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|(flags&^unix.MS_REC), ""); err != nil {
				return fmt.Errorf("remount %s with %v: %w", m.Destination, m.Options, err)
			}
		}
	} else {
		// Usually the mount point exists or only its last component is
		// missing; then dest, resolved above, stays valid. Otherwise
		// create the missing parents and resolve again.
		if err := unix.Mkdir(dest, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			if err := mkTarget(dest, true); err != nil {
				return fmt.Errorf("create mount point %q: %w", m.Destination, err)
			}
			if dest, err = securejoin.SecureJoin(root, m.Destination); err != nil {
				return err
			}
		}
		src := m.Source
		if src == "" {
			src = m.Type
		}
		err := unix.Mount(src, dest, m.Type, flags, data)
		if err != nil && m.Type == "mqueue" {
			return nil // optional in a minimal guest kernel
		}
		if err != nil && flags&unix.MS_RDONLY == 0 && m.Type == "sysfs" {
			err = unix.Mount(src, dest, m.Type, flags|unix.MS_RDONLY, data)
		}
		if err != nil {
			return fmt.Errorf("mount %s (%s) on %s: %w", src, m.Type, m.Destination, err)
		}
	}
	for _, pf := range pflags {
		if err := unix.Mount("", dest, "", pf, ""); err != nil {
			return fmt.Errorf("set propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
}

func mkTarget(dest string, dir bool) error {
	if dir {
		return os.MkdirAll(dest, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dest, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		if _, serr := os.Stat(dest); serr == nil {
			return nil
		}
		return err
	}
	return f.Close()
}

var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

// populateDev bind-mounts the basic device nodes from the guest's /dev into
// the container's fresh /dev tmpfs and adds the usual symlinks.
func populateDev(root string) error {
	dev, err := securejoin.SecureJoin(root, "/dev")
	if err != nil {
		return err
	}
	for _, n := range devNodes {
		src := "/dev/" + n
		if _, err := os.Stat(src); err != nil {
			continue
		}
		dst := filepath.Join(dev, n)
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return fmt.Errorf("create /dev/%s: %w", n, err)
		}
		f.Close()
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	for link, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	} {
		if err := os.Symlink(target, filepath.Join(dev, link)); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("create /dev/%s: %w", link, err)
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.MkdirAll(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"rec": {false, unix.MS_REC},
}

var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits fstab-style options into mount(2) flags,
// propagation changes, file-system data and whether it is a bind mount.
func parseMountOptions(opts []string) (flags uintptr, prop []uintptr, data string, bind bool) {
	var extra []string
	for _, o := range opts {
		switch o {
		case "bind":
			bind = true
			continue
		case "rbind":
			bind = true
			flags |= unix.MS_REC
			continue
		}
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		extra = append(extra, o)
	}
	return flags, prop, strings.Join(extra, ","), bind
}
