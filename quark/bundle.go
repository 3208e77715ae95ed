package quark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/atomicfile"
	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/forward"
)

// Layout of a sandbox's state directory (backend.Sandbox.StateDir), as
// Kuasar lays it out for Quark:
//
//	sandbox/              the sandbox's OCI bundle, Quark's root (-r)
//	sandbox/config.json   the sandbox spec, from the PodSandboxConfig
//	sandbox/rootfs/dev    the sandbox's (empty) root
//	sandbox/<cid>/        a container's bundle: config.json, rootfs/ (its
//	                      rootfs mounted), and its stdio FIFOs bind-mounted
//	                      as stdin, stdout, stderr (<exec>-stdout... for an
//	                      exec); Quark sees them as /<cid>/...
//	quark-task.sock       Quark's Task API v2 socket
//	pid                   the pid Quark writes
//	process.json          the pid and start time recorded for Recover
//	quark.log             the quark command's output
//	quark.proc            the sandbox process's record (internal/procmark),
//	                      written before quark runs, then with its pid
const (
	bundleDir   = "sandbox"
	socketName  = "quark-task.sock"
	pidName     = "pid"
	processName = "process.json"
	logName     = "quark.log"
	recordName  = "quark" + procmark.RecordExt
)

// sandboxSpec is the sandbox's OCI spec, from what the pod asked for:
// hostname, network namespace and resources, root "rootfs".
func sandboxSpec(sb backend.Sandbox) *specs.Spec {
	sp := &specs.Spec{
		Version:     specs.Version,
		Hostname:    sb.Hostname,
		Root:        &specs.Root{Path: "rootfs"},
		Process:     &specs.Process{Cwd: "/"},
		Annotations: sb.Annotations,
		Linux:       &specs.Linux{},
	}
	if sb.NetnsPath != "" {
		sp.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: sb.NetnsPath}}
	}
	r := sb.Resources
	if r.MemoryLimitBytes != 0 || r.CPUQuota > 0 || r.CPUPeriod > 0 {
		res := &specs.LinuxResources{}
		if r.MemoryLimitBytes != 0 {
			l := int64(r.MemoryLimitBytes)
			res.Memory = &specs.LinuxMemory{Limit: &l}
		}
		if r.CPUQuota > 0 || r.CPUPeriod > 0 {
			res.CPU = &specs.LinuxCPU{}
			if r.CPUQuota > 0 {
				q := r.CPUQuota
				res.CPU.Quota = &q
			}
			if r.CPUPeriod > 0 {
				p := r.CPUPeriod
				res.CPU.Period = &p
			}
		}
		sp.Linux.Resources = res
	}
	return sp
}

// writeSandboxBundle writes the sandbox's bundle in dir (created 0700).
func writeSandboxBundle(dir string, sb backend.Sandbox) error {
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "dev"), 0o700); err != nil {
		return fmt.Errorf("creating the sandbox bundle %s: %w", dir, err)
	}
	b, err := json.Marshal(sandboxSpec(sb))
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, "config.json"), b, 0o600, false)
}

// host is the Quark backend's half of the Task API forwarder
// (task/forward.Host and forward.DirectIO): Quark's Task API through the
// v2 bridge, each container's bundle in the sandbox bundle, and the
// containers' stdio bind-mounted where Quark opens it.
type host struct{ i *Instance }

var (
	_ forward.Host     = host{}
	_ forward.DirectIO = host{}
)

// Agent returns the bridge to Quark's Task API while Quark runs. Quark
// opens the stdio itself: there is no stream service.
func (h host) Agent() (taskAPI.TTRPCTaskService, agentapi.AgentService, error) {
	i := h.i
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.tasks == nil || i.exit != nil {
		return nil, nil, fmt.Errorf("quark sandbox %s is not running: %w", i.sb.ID, errdefs.ErrFailedPrecondition)
	}
	return i.tasks, nil, nil
}

// ShimPid is Quark's pid.
func (h host) ShimPid() uint32 { return h.i.Pid() }

// Prepare makes sandbox/<id> with the container's rootfs mounted at
// rootfs/ and its config.json, and returns the bundle as Quark sees it:
// /<id>, below its root.
func (h host) Prepare(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (string, error) {
	root, err := fsroot.Open(h.i.bundle())
	if err != nil {
		return "", fmt.Errorf("container %s: opening the sandbox bundle: %w: %w", r.ID, err, errdefs.ErrFailedPrecondition)
	}
	defer root.Close()
	if err := root.Mkdir(r.ID, 0o700); err != nil {
		return "", fmt.Errorf("container %s: creating its bundle in the sandbox bundle: %w", r.ID, err)
	}
	cdir, err := root.OpenRoot(r.ID)
	if err != nil {
		return "", err
	}
	defer cdir.Close()
	if err := mountRootfs(r, spec, cdir); err != nil {
		return "", err
	}
	if spec.Root == nil {
		spec.Root = &specs.Root{}
	}
	spec.Root.Path = "rootfs"
	b, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	f, err := cdir.OpenFile("config.json", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("container %s: writing its config.json: %w", r.ID, err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("container %s: writing its config.json: %w", r.ID, err)
	}
	return "/" + r.ID, nil
}

// mountRootfs mounts the container's rootfs at rootfs/ in cdir: the
// request's rootfs mounts, or else a bind mount of the bundle's root.path.
// The mount point is created and mounted on through its fd.
func mountRootfs(r *taskAPI.CreateTaskRequest, spec *specs.Spec, cdir *fsroot.Root) error {
	if err := cdir.Mkdir("rootfs", 0o755); err != nil {
		return err
	}
	target, err := cdir.OpenPath("rootfs", true)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if len(r.Rootfs) > 0 {
		if err := mount.All(mount.FromProto(r.Rootfs), procFd(target)); err != nil {
			return fmt.Errorf("mounting the rootfs of container %s: %w", r.ID, err)
		}
		return nil
	}
	src := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		src = spec.Root.Path
	}
	if !filepath.IsAbs(src) {
		src = filepath.Join(r.Bundle, src)
	}
	fd, err := unix.Open(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container %s: rootfs %s is not a directory (no rootfs mounts in the request): %w: %w", r.ID, src, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(fd)
	if err := unix.Mount(procFd(fd), procFd(target), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting rootfs %s of container %s: %w", src, r.ID, err)
	}
	return nil
}

// Release unmounts everything in the container's bundle and removes it.
func (h host) Release(ctx context.Context, id string) error {
	return cleanupDir(filepath.Join(h.i.bundle(), id))
}

// stdioNames are the file names of a process's stdio in its container's
// bundle: stdin, stdout, stderr for the container, <exec>-stdin... for
// an exec.
func stdioNames(execID string) [3]string {
	p := ""
	if execID != "" {
		p = execID + "-"
	}
	return [3]string{p + "stdin", p + "stdout", p + "stderr"}
}

// PrepareIO bind-mounts each of the host's stdio paths onto a file of the
// same name in the container's bundle, and returns the paths Quark opens
// them by (/<cid>/stdout...). A path the host does not have is refused.
func (h host) PrepareIO(ctx context.Context, cid, execID string, io forward.IO) (forward.IO, error) {
	names := stdioNames(execID)
	in := [3]string{io.Stdin, io.Stdout, io.Stderr}
	var out [3]string
	cdir, err := fsroot.Open(filepath.Join(h.i.bundle(), cid))
	if err != nil {
		return forward.IO{}, fmt.Errorf("opening the bundle of container %s: %w: %w", cid, err, errdefs.ErrNotFound)
	}
	defer cdir.Close()
	for k, p := range in {
		if p == "" {
			continue
		}
		if err := bindFile(cdir, names[k], p); err != nil {
			return forward.IO{}, fmt.Errorf("making %s reachable by Quark: %w", p, err)
		}
		out[k] = "/" + cid + "/" + names[k]
	}
	return forward.IO{Stdin: out[0], Stdout: out[1], Stderr: out[2]}, nil
}

// bindFile creates the empty file name in dir and bind-mounts src on it.
func bindFile(dir *fsroot.Root, name, src string) error {
	sfd, err := unix.Open(src, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%s is a directory: %w", src, errdefs.ErrInvalidArgument)
	}
	f, err := dir.OpenFile(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	tfd, err := dir.OpenPath(name, true)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	return unix.Mount(procFd(sfd), procFd(tfd), "", unix.MS_BIND, "")
}

// ReleaseIO unmounts and removes an exec's stdio files.
func (h host) ReleaseIO(ctx context.Context, cid, execID string) error {
	dir := filepath.Join(h.i.bundle(), cid)
	var errs []error
	for _, n := range stdioNames(execID) {
		p := filepath.Join(dir, n)
		if err := unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func procFd(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// cleanupDir unmounts everything at or below dir, deepest first, then
// removes dir; it removes nothing while a mount is left below dir (that
// mount may be a container's real rootfs).
func cleanupDir(dir string) error {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("listing the mounts below %s: %w", dir, err)
	}
	targets := make([]string, 0, len(ms))
	for _, m := range ms {
		targets = append(targets, m.Mountpoint)
	}
	sort.Slice(targets, func(a, b int) bool { return len(targets[a]) > len(targets[b]) })
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("not removing %s: %w", dir, errors.Join(errs...))
	}
	if left, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); err != nil || len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted below it (%d) or unreadable mount table (%v): %w", dir, len(left), err, errdefs.ErrFailedPrecondition)
	}
	return os.RemoveAll(dir)
}
