package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/internal/procmark"
)

// A Jail confines one VMM process (QEMU): it runs in mount, network and
// IPC namespaces of its own, its root is a private tmpfs that holds only
// the files the Jail names (bound at the same paths, so the command line
// needs no rewriting), under a uid/gid of its own with no supplementary
// groups, with only the capabilities in Caps (bounding, permitted,
// effective and ambient sets alike) and no_new_privs.
//
// The jail is built by a helper: the dedicated kuasar-vmm-jail binary
// (see HelperName), or else the calling binary re-executed (through
// /proc/self/exe), started as "kuasar-vmm-jail" and cloned into the new
// namespaces, that prepares the root, pivots into it, drops its credentials and
// execs the VMM. Every mount it makes lives in the VMM's own mount
// namespace and dies with it: nothing is ever mounted on the host.
type Jail struct {
	// Root is an empty directory; the jail's root tmpfs is mounted on it
	// inside the VMM's mount namespace only.
	Root string `json:"root"`
	// Binds are host files and directories the VMM needs, visible at the
	// same paths inside the jail.
	Binds []Bind `json:"binds"`
	// Symlinks are recreated in the jail (target → link), e.g. the
	// merged-/usr links /lib → usr/lib the dynamic loader needs.
	Symlinks map[string]string `json:"symlinks,omitempty"`
	// Devices are host character devices recreated in the jail's /dev
	// (besides null, zero, random and urandom, which every jail has),
	// owned by UID with mode 0600, e.g. /dev/kvm.
	Devices []string `json:"devices,omitempty"`
	// UID and GID are the credentials the VMM runs under; both must be
	// non-zero.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// Proc mounts a procfs at /proc that shows the VMM only its own
	// processes (hidepid=invisible: the VMM's uid has no other) and no
	// system files (subset=pid): QEMU's 9p server changes modes through
	// /proc/self/fd.
	Proc bool `json:"proc,omitempty"`
	// Caps are the capabilities the VMM keeps (numbers as in
	// capabilities(7), e.g. unix.CAP_CHOWN); every other one is dropped
	// from all sets, bounding set included.
	Caps []uintptr `json:"caps,omitempty"`
	// Lease, when set, is inherited by the VMM (as fd 3) and keeps its
	// uid leased for as long as the VMM lives (see LeaseUID).
	Lease *os.File `json:"-"`
	// Files are inherited by the VMM as descriptors InheritedFD(true, 0),
	// InheritedFD(true, 1), ... (e.g. a VM template's sealed memory,
	// which the VMM opens through /proc/self/fd instead of a path).
	Files []*os.File `json:"-"`
	// NFiles is len(Files), set by StartJailed for the helper.
	NFiles int `json:"nfiles,omitempty"`
}

// Bind is one host path visible in a Jail at the same path.
type Bind struct {
	// Path is the host path (a file or a directory); symlinks in it are
	// followed once, when the helper opens it.
	Path string `json:"path"`
	// Writable leaves the bind writable; otherwise it is read-only.
	Writable bool `json:"writable,omitempty"`
	// Recursive binds the mounts below Path too; they stay slaves of the
	// host's, so mounts the host makes there later (container rootfs
	// binds in a shared directory that is itself a shared mount) appear
	// in the jail as well.
	Recursive bool `json:"recursive,omitempty"`
}

// JailArg0 is argv[0] of the jail helper; a binary that imports this
// package turns into the helper when started with it (see HelperMain).
const JailArg0 = "kuasar-vmm-jail"

// Inherited descriptors of the helper.
const (
	leaseFD  = 3 // the uid lease, kept open across exec by the VMM
	statusFD = 4 // close-on-exec: an error text, or EOF once the VMM runs
)

// InheritedFD is the descriptor number the i-th of the extra files
// handed to a VMM (Jail.Files when jailed, Start's files otherwise) has
// in the VMM: after the lease and the helper's status pipe in a jail,
// right after stderr otherwise.
func InheritedFD(jailed bool, i int) int {
	if jailed {
		return statusFD + 1 + i
	}
	return 3 + i
}

// jailSetupTimeout bounds the helper's set-up (a few ms normally).
const jailSetupTimeout = 30 * time.Second

// CanJail reports whether this process can build a Jail: it needs root
// (CAP_SYS_ADMIN for the namespaces and mounts, CAP_SETUID to drop to
// the VMM's uid).
func CanJail() bool { return os.Geteuid() == 0 }

// StartJailed is Start for a VMM confined in j: the helper sets the jail
// up, then execs path with args. It returns once the VMM runs (the exec
// succeeded) or with the helper's error; a failure leaves no process
// behind and nothing mounted anywhere.
func StartJailed(path string, args []string, logPath string, j *Jail) (*Process, error) {
	if j.UID == 0 || j.GID == 0 {
		return nil, fmt.Errorf("vmm jail for %s: uid and gid must not be 0: %w", path, errdefs.ErrInvalidArgument)
	}
	j.NFiles = len(j.Files)
	spec, err := json.Marshal(j)
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
		return nil, err
	}
	defer sr.Close()
	lease := j.Lease
	if lease == nil {
		// Keep fd 3 taken so the status pipe is fd 4.
		if lease, err = os.Open(os.DevNull); err != nil {
			sw.Close()
			return nil, err
		}
		defer lease.Close()
	}
	cmd := &exec.Cmd{
		Path:       helperPath(),
		Args:       append([]string{JailArg0, string(spec), path}, args...),
		Env:        []string{procmark.Pair(Owner(logPath))},
		Stdout:     lf,
		Stderr:     lf,
		ExtraFiles: append([]*os.File{lease, sw}, j.Files...),
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		},
	}
	p, err := startHelper(cmd, sr, sw, logPath, fmt.Sprintf("start the vmm jail helper for %s", path), fmt.Sprintf("confining %s (mount namespace, uid %d, capabilities)", path, j.UID))
	if err != nil {
		return nil, err
	}
	crashpoint.Hit("vmm.forked")
	// The helper exec'd the VMM in place: same pid, same start time.
	if err := p.recordStarted(path); err != nil {
		p.Kill()
		forget(logPath)
		return nil, err
	}
	return p, nil
}

// LeaseUID finds a uid in [base, base+count) that no other VMM holds and
// leases it: the lease is an abstract unix socket named after the uid,
// bound by this process, and it lasts for as long as some process holds
// the returned file open. StartJailed hands it to the VMM, so the uid
// stays taken while the VMM lives, also across sandboxer restarts and
// between concurrent sandboxers (kuasar run and the daemon).
func LeaseUID(base, count uint32) (uint32, *os.File, error) {
	if base == 0 || uint64(base)+uint64(count) > 1<<31 {
		return 0, nil, fmt.Errorf("vmm uid range %d+%d: must lie within 1..2^31-1 (vmm_uid_base, vmm_uid_count in [hypervisor.*]): %w", base, count, errdefs.ErrInvalidArgument)
	}
	for i := uint32(0); i < count; i++ {
		uid := base + i
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, nil, fmt.Errorf("vmm uid lease: %w", err)
		}
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: "@kuasar-vmm-uid-" + strconv.FormatUint(uint64(uid), 10)})
		if err == nil {
			return uid, os.NewFile(uintptr(fd), "vmm-uid-lease"), nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EADDRINUSE) {
			return 0, nil, fmt.Errorf("vmm uid lease: %w", err)
		}
	}
	return 0, nil, fmt.Errorf("all %d vmm uids from %d are in use by running VMMs: raise vmm_uid_count in [hypervisor.*]: %w", count, base, errdefs.ErrResourceExhausted)
}

// runJailHelper runs in the helper (a fresh process in new mount,
// network and IPC namespaces): it builds the jail described by specJSON,
// pivots into it, drops credentials and execs path. It returns only on
// failure.
func runJailHelper(specJSON, path string, args []string) error {
	var j Jail
	if err := json.Unmarshal([]byte(specJSON), &j); err != nil {
		return fmt.Errorf("bad jail spec: %w", err)
	}
	if j.UID == 0 || j.GID == 0 {
		return errors.New("jail uid and gid must not be 0")
	}
	// Capabilities and prctl settings are per thread: everything below
	// runs on this one, which then execs.
	runtime.LockOSThread()
	unix.CloseOnExec(statusFD)
	// Nothing we mount may reach the host; host mounts still reach us.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / a slave: %w", err)
	}
	root := j.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m,nr_inodes=4096"); err != nil {
		return fmt.Errorf("mount the jail's root tmpfs on %s: %w", root, err)
	}
	// /dev first (a state directory may live below /dev/shm), the
	// symlinks last: no bind is ever made through one.
	if err := makeDev(root, j); err != nil {
		return err
	}
	if err := bindAll(root, j.Binds); err != nil {
		return err
	}
	for link, target := range j.Symlinks {
		in := filepath.Join(root, link)
		if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(target, in); err != nil {
			return fmt.Errorf("jail: symlink %s: %w (a bound path goes through the host's symlink %s: configure it by its real path)", link, err, link)
		}
	}
	if j.Proc {
		proc := filepath.Join(root, "proc")
		if err := os.Mkdir(proc, 0o555); err != nil {
			return err
		}
		if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible,subset=pid"); err != nil {
			return fmt.Errorf("mount the jail's /proc (hidepid=invisible,subset=pid needs Linux 5.8): %w", err)
		}
	}
	if err := pivot(root); err != nil {
		return err
	}
	for _, m := range []string{"/dev", "/"} {
		if err := setAttr(m, unix.MOUNT_ATTR_RDONLY, false); err != nil {
			return fmt.Errorf("make %s read-only: %w", m, err)
		}
	}
	unix.Umask(0o077)
	if err := dropPrivileges(j); err != nil {
		return err
	}
	// Descriptors the runtime opened must not reach the VMM; j.Files
	// (inherited after the status pipe) must.
	if err := unix.CloseRange(uint(InheritedFD(true, j.NFiles)), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	// The VMM gets no environment but its owner's mark (procmark).
	var env []string
	if owner, ok := os.LookupEnv(procmark.Env); ok {
		env = append(env, procmark.Pair(owner))
	}
	err := unix.Exec(path, append([]string{path}, args...), env)
	return fmt.Errorf("exec %s in the jail: %w", path, err)
}

// bindAll binds each of binds at its own path below root. A bind whose
// path lies inside an earlier one is already visible when it names the
// same file; binds are never made through another bind (that would create
// the mount point on the host).
func bindAll(root string, binds []Bind) error {
	sort.Slice(binds, func(a, b int) bool { return binds[a].Path < binds[b].Path })
	var done []string
	for _, b := range binds {
		p := filepath.Clean(b.Path)
		if !filepath.IsAbs(p) {
			return fmt.Errorf("jail bind %q is not absolute", b.Path)
		}
		inside := false
		for _, d := range done {
			if p == d || strings.HasPrefix(p, d+"/") || d == "/" {
				inside = true
			}
		}
		if inside {
			continue
		}
		if err := bindOne(root, p, b); err != nil {
			return err
		}
		done = append(done, p)
	}
	return nil
}

func bindOne(root, p string, b Bind) error {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("jail: open %s: %w", p, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	target := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = os.Mkdir(target, 0o755)
	} else {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND)
	if b.Recursive {
		flags |= unix.MS_REC
	}
	if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), target, "", flags, ""); err != nil {
		return fmt.Errorf("jail: bind %s: %w", p, err)
	}
	attr := uint64(unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if !b.Writable {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if err := setAttr(target, attr, b.Recursive); err != nil {
		return fmt.Errorf("jail: restrict bind %s: %w", p, err)
	}
	return nil
}

// setAttr sets mount attributes on the mount at path (and the mounts
// below it when recursive).
func setAttr(path string, attr uint64, recursive bool) error {
	flags := 0
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	err := unix.MountSetattr(unix.AT_FDCWD, path, uint(flags), &unix.MountAttr{Attr_set: attr})
	if errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("%w: the VMM jail needs mount_setattr(2), Linux 5.12 or later", err)
	}
	return err
}

// makeDev mounts a small tmpfs on root/dev with the standard character
// devices (mode 0666, as on the host) and j.Devices (owned by the VMM's
// uid, mode 0600).
func makeDev(root string, j Jail) error {
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=1m,nr_inodes=1024"); err != nil {
		return fmt.Errorf("mount the jail's /dev: %w", err)
	}
	mk := func(host string, mode uint32, own bool) error {
		var st unix.Stat_t
		if err := unix.Stat(host, &st); err != nil {
			return fmt.Errorf("jail: device %s: %w", host, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR {
			return fmt.Errorf("jail: %s is not a character device", host)
		}
		in := filepath.Join(dev, filepath.Base(host))
		if err := unix.Mknod(in, unix.S_IFCHR|mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("jail: mknod %s: %w", in, err)
		}
		if err := unix.Chmod(in, mode); err != nil { // mknod honours the umask
			return err
		}
		if own {
			return unix.Chown(in, int(j.UID), int(j.GID))
		}
		return nil
	}
	for _, d := range []string{"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"} {
		if err := mk(d, 0o666, false); err != nil {
			return err
		}
	}
	for _, d := range j.Devices {
		if err := mk(d, 0o600, true); err != nil {
			return err
		}
	}
	return nil
}

// pivot makes root the root of this mount namespace and detaches the old
// one, so no host path is reachable any more.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// dropPrivileges drops every capability not in j.Caps from the bounding
// set, switches to j.UID/j.GID with no supplementary groups while keeping
// j.Caps (as ambient capabilities, so they survive the exec of an
// ordinary binary), and sets no_new_privs.
func dropPrivileges(j Jail) error {
	var keep [2]uint32
	for _, c := range j.Caps {
		if c >= 64 {
			return fmt.Errorf("capability %d out of range", c)
		}
		keep[c/32] |= 1 << (c % 32)
	}
	kept := func(c uintptr) bool { return c < 64 && keep[c/32]&(1<<(c%32)) != 0 }
	for c := uintptr(0); c < 64; c++ {
		if kept(c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) { // past the kernel's last capability
				break
			}
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(int(j.GID), int(j.GID), int(j.GID)); err != nil {
		return fmt.Errorf("setresgid %d: %w", j.GID, err)
	}
	if err := syscall.Setresuid(int(j.UID), int(j.UID), int(j.UID)); err != nil {
		return fmt.Errorf("setresuid %d: %w", j.UID, err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		data[i] = unix.CapUserData{Effective: keep[i], Permitted: keep[i], Inheritable: keep[i]}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	for _, c := range j.Caps {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}

// startHelper starts cmd, a helper that sets up the VMM's confinement and
// then execs it, and waits (within jailSetupTimeout) for the helper's
// report on sr: EOF (its end closes on exec) means the VMM runs; anything
// else is the helper's error, and the helper is killed. starting and
// confining name the VMM in the two errors.
func startHelper(cmd *exec.Cmd, sr, sw *os.File, logPath, starting, confining string) (*Process, error) {
	err := cmd.Start()
	sw.Close()
	if err != nil {
		forget(logPath)
		return nil, fmt.Errorf("%s: %w", starting, err)
	}
	p := child(cmd, logPath)
	_ = sr.SetReadDeadline(time.Now().Add(jailSetupTimeout))
	msg, rerr := io.ReadAll(io.LimitReader(sr, 4096))
	if rerr != nil || len(msg) > 0 {
		p.Kill()
		if len(msg) == 0 {
			msg = []byte(rerr.Error())
		}
		forget(logPath)
		return nil, fmt.Errorf("%s: %s: %w", confining, msg, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}
