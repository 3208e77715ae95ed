package sandboxer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	api "github.com/containerd/containerd/api/services/sandbox/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/procmark"
)

// Crash consistency. Every process a backend starts for a sandbox (a VMM,
// virtiofsd, Quark's sandbox process) is owned by the sandbox's backend
// directory: it is recorded there (a *.proc file in it or one level down,
// e.g. quark.proc, vm/vmm.proc) before it is
// started and again with its pid and start time once it runs, and it
// carries the directory as its mark (internal/procmark). Every socket a
// sandbox owns is its task socket or lives in that directory. So whatever
// the point a sandboxer was killed at, the next one finds everything:
//
//   - a backend directory no record names is reaped: its processes
//     killed, its mounts detached, its files removed;
//   - a record whose backend was not (or not completely) started, a
//     CREATED record or one without a backend, gets the same clean-up of
//     its directory; the record stays, for containerd to stop and remove;
//   - a record with a backend is re-attached (backend.Recover); one that
//     cannot be, and is reported exited, is reaped;
//   - a marked process whose sandbox is not running after all that is
//     killed (reconcileProcs).
//
// A process may also be owned by a directory other than its mark's: a VM
// clone made ahead of need in a directory of its own (the VM backend's
// warm pool, <base>/b/p-*) moves, record included, into the directory of
// the sandbox that adopts it. Its record there makes it that sandbox's
// (recordedProcs): reaped with it, spared while it runs.

// reapDir kills every process owned by dir (a backend directory), detaches
// every mount below it and removes it. Nothing is removed while a mount is
// left below dir: that mount may be a container's real rootfs, and a
// recursive removal would delete its contents.
func reapDir(ctx context.Context, dir string) error {
	// An empty directory, or none, is the common case (a Wasm sandbox's
	// backend removed its one file at Shutdown): rmdir(2) succeeds only
	// on an empty directory that is no mount point, and an empty
	// directory holds no process record (records are written before
	// their process starts), so it owned no process and nothing was
	// mounted below it. One system call instead of the walk's seven.
	if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	var errs []error
	isOwned, mountFree := scanBackendDir(dir)
	if isOwned {
		killed, err := procmark.Reap(dir)
		for _, p := range killed {
			log.G(ctx).WithField("pid", p.Pid).WithField("owner", p.Owner).Warn("killed a process of a sandbox that is not running")
		}
		if err != nil {
			errs = append(errs, err)
		}
		if err := killRecorded(ctx, dir); err != nil {
			errs = append(errs, err)
		}
	}
	if mountFree {
		// Nothing is mounted at or below dir: no need to read the
		// mount table (twice) to find out.
		if err := removeDir(dir); err != nil {
			errs = append(errs, err)
		}
	} else if err := unmountBelow(dir); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// scanBackendDir reads dir's tree once for reapDir. isOwned is what owned
// reports. mountFree is true when nothing can be mounted at or below dir:
// dir is on its parent's mount and every entry below it on dir's (the
// mount ID statx(2) reports for a path is the mount it resolves to, so a
// mount on a directory or a file below dir shows as another ID, and one
// hidden under another mount below dir is found through that one), or dir
// does not exist. It is false whenever that cannot be told (statx without
// STATX_MNT_ID, an unreadable directory): reapDir then reads the mount
// table. A Wasm sandbox's directory holds a file or two and no mount, so
// its Shutdown skips the mount table, which costs more than the rest of the
// sandbox's removal.
func scanBackendDir(dir string) (isOwned, mountFree bool) {
	parent, err := mountID(filepath.Dir(dir))
	if err != nil {
		return owned(dir), false
	}
	id, err := mountID(dir)
	if errors.Is(err, unix.ENOENT) {
		return false, true
	}
	if err != nil || id != parent {
		return owned(dir), false
	}
	mountFree = true
	var walk func(d string, depth int)
	walk = func(d string, depth int) {
		ents, err := os.ReadDir(d)
		if err != nil {
			mountFree = false
			return
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if depth <= 1 && strings.HasSuffix(e.Name(), procmark.RecordExt) {
				isOwned = true
			}
			if mid, err := mountID(p); err != nil || mid != id {
				mountFree = false
				continue
			}
			if e.IsDir() {
				walk(p, depth+1)
			}
		}
	}
	walk(dir, 0)
	if !mountFree {
		// The walk stopped at a mount: owned's own look decides.
		return owned(dir), false
	}
	return isOwned, true
}

// mountID is the ID of the mount path resolves to (not following a final
// symlink).
func mountID(path string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, fmt.Errorf("statx %s: no mount ID: %w", path, errdefs.ErrNotImplemented)
	}
	return stx.Mnt_id, nil
}

// owned reports whether a process was ever recorded in dir (in it, as
// Quark's quark.proc, or one level down, as a VM's vm/vmm.proc): records
// are written before a process starts, so a directory without one owns
// none and needs no scan of /proc.
func owned(dir string) bool {
	for _, pat := range []string{filepath.Join(dir, "*"+procmark.RecordExt), filepath.Join(dir, "*", "*"+procmark.RecordExt)} {
		if recs, _ := filepath.Glob(pat); len(recs) > 0 {
			return true
		}
	}
	return false
}

// recordedProcs lists the running processes recorded in dir (a backend
// directory) whose mark is another directory's: a VM clone the backend
// made ahead of need (the VM backend's warm pool) is marked with the
// directory it was made in and recorded there, and the record moves
// into the sandbox's directory with the rest of the clone when a sandbox
// adopts it, while the mark, fixed at exec, does not.
//
// Such a record is honoured only from a directory no one but this process's
// user can write (a VM's own state directory is writable by its confined
// VMM's group, and a compromised VMM must not name another sandbox's
// process there); the VM backend keeps a copy of a clone's record in a
// directory of its own for that (vm/vmbackend/pool.go).
func recordedProcs(dir string) []procmark.Proc {
	recs, _ := filepath.Glob(filepath.Join(dir, "*", "*"+procmark.RecordExt))
	var out []procmark.Proc
	for _, path := range recs {
		if !ownOnly(filepath.Dir(path)) {
			continue
		}
		r, err := procmark.Read(path)
		if err != nil || r.Pid == 0 || procmark.Under(r.Owner, dir) {
			continue
		}
		out = append(out, r.Proc())
	}
	return out
}

// ownOnly reports whether dir is a real directory of this process's user
// that no group or other user can write.
func ownOnly(dir string) bool {
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// killRecorded kills the processes recordedProcs finds in dir (each by
// pid, start time and mark, through a pidfd: a reused pid is never hit).
func killRecorded(ctx context.Context, dir string) error {
	var errs []error
	for _, p := range recordedProcs(dir) {
		if !procmark.Alive(p) {
			continue
		}
		if err := procmark.Kill(p); err != nil {
			errs = append(errs, err)
			continue
		}
		log.G(ctx).WithField("pid", p.Pid).WithField("owner", p.Owner).Warn("killed an adopted process of a sandbox that is not running")
	}
	return errors.Join(errs...)
}

// unmountBelow detaches every mount at or below dir, deepest first, and
// fails when one is left.
func unmountBelow(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	sort.Slice(mounts, func(a, b int) bool { return len(mounts[a].Mountpoint) > len(mounts[b].Mountpoint) })
	for _, m := range mounts {
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m.Mountpoint, err)
		}
	}
	if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(left) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted: %w", dir, left[0].Mountpoint, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// backendsRoot is the directory holding every backend directory.
func (s *store) backendsRoot() string { return filepath.Join(s.base, "b") }

// ownerDir maps a process's mark to the backend directory it belongs to
// ("" when the mark is not below backendsRoot).
func (s *store) ownerDir(owner string) string {
	root := s.backendsRoot()
	rest, ok := strings.CutPrefix(owner, root+"/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	if first == "" || first == "." || first == ".." {
		return ""
	}
	return filepath.Join(root, first)
}

// reconcileProcs kills every marked process below the backends root whose
// sandbox does not run: no record names its directory, or the record's
// sandbox has no live backend instance. It runs once the records are
// re-attached. Processes started after since (procmark.Now, taken before
// the records were read; a process of the same clock tick counts as
// before) belong to this run and are left alone:
// sandboxes are served while the old ones are re-attached, and a backend
// may make processes of its own ahead of need (the VM backend's warm pool).
func (s *Service) reconcileProcs(ctx context.Context, since uint64) {
	procs, err := procmark.Scan(s.store.backendsRoot())
	if err != nil {
		log.G(ctx).WithError(err).Warn("scan for processes of sandboxes")
		return
	}
	if len(procs) == 0 {
		return
	}
	live := map[string]bool{}
	adopted := map[procmark.Proc]bool{}
	s.mu.Lock()
	for _, sb := range s.sandboxes {
		sb.mu.Lock()
		if sb.inst != nil && !sb.rec.Exited {
			dir := s.store.backendDir(sb.rec.ID)
			live[dir] = true
			for _, p := range recordedProcs(dir) {
				adopted[procmark.Proc{Pid: p.Pid, StartTime: p.StartTime}] = true
			}
		}
		sb.mu.Unlock()
	}
	s.mu.Unlock()
	for _, p := range procs {
		if p.StartTime > since || live[s.store.ownerDir(p.Owner)] || adopted[procmark.Proc{Pid: p.Pid, StartTime: p.StartTime}] {
			continue
		}
		if err := procmark.Kill(p); err != nil {
			log.G(ctx).WithError(err).WithField("pid", p.Pid).Warn("kill a process of a sandbox that does not run")
			continue
		}
		log.G(ctx).WithField("pid", p.Pid).WithField("owner", p.Owner).Warn("killed a process of a sandbox that does not run (the sandboxer was killed while it started or stopped)")
	}
}

// resetUnstartedLocked cleans up after a backend whose start the record
// does not show complete (killed during Start, or during the first task's
// Create that starts it): its processes, mounts and files go, and the
// record forgets the backend, so Stop and Shutdown see nothing left to
// stop and a new Start begins afresh.
func (sb *sandbox) resetUnstartedLocked(ctx context.Context) {
	dir := sb.svc.store.backendDir(sb.rec.ID)
	if _, err := os.Lstat(dir); err == nil {
		if err := reapDir(ctx, dir); err != nil {
			sb.logger(ctx).WithError(err).Warn("clean up a backend whose start was interrupted")
		} else {
			sb.logger(ctx).WithField("backend", sb.rec.Backend).Info("cleaned up a backend whose start was interrupted")
		}
	}
	sb.rec.Backend, sb.rec.Checkpoint = "", nil
}

// SandboxStore is containerd's sandbox store as the sandboxer asks it after
// a restart (ContainerdImages implements it).
type SandboxStore interface {
	// SandboxExists reports whether containerd still holds sandbox id in
	// namespace ns. An error means containerd could not say.
	SandboxExists(ctx context.Context, ns, id string) (bool, error)
}

// WithSandboxStore lets the sandboxer ask containerd, after a restart,
// which of its sandboxes containerd still knows (see dropForgotten).
func WithSandboxStore(st SandboxStore) Option { return func(s *Service) { s.containerd = st } }

// storeProbeTimeout bounds one question to containerd's sandbox store.
const storeProbeTimeout = 5 * time.Second

// dropForgotten shuts down every recovered sandbox that containerd no
// longer knows. containerd records a sandbox in its store before it calls
// Create, and when the sandboxer dies during a pod's Create or Start, CRI's
// clean-up of the failed RunPodSandbox cannot reach the sandboxer but does
// delete the sandbox from its store: nobody would ever call Shutdown for
// it. Only a definite NotFound counts: when containerd cannot be asked, the
// records stay (and containerd shuts them down as usual).
func (s *Service) dropForgotten(ctx context.Context, recovered []string) {
	if s.containerd == nil {
		return
	}
	for _, id := range recovered {
		s.mu.Lock()
		sb := s.sandboxes[id]
		s.mu.Unlock()
		if sb == nil {
			continue
		}
		sb.mu.Lock()
		ns := sb.rec.Namespace
		sb.mu.Unlock()
		if ns == "" {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
		known, err := s.containerd.SandboxExists(pctx, ns, id)
		cancel()
		if err != nil {
			log.G(ctx).WithError(err).Info("containerd's sandbox store cannot be asked; keeping every recovered sandbox")
			return
		}
		if known {
			continue
		}
		if _, err := s.Shutdown(ctx, &api.ControllerShutdownRequest{SandboxID: id}); err != nil {
			log.G(ctx).WithField("sandbox", id).WithError(err).Warn("shut down a sandbox containerd no longer knows")
			continue
		}
		log.G(ctx).WithField("sandbox", id).Warn("shut down a sandbox containerd no longer knows (the sandboxer was killed while containerd created or started it)")
	}
}
