package vmbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	"github.com/kuasar-go/kuasar/task/forward"
	"github.com/kuasar-go/kuasar/vm"
)

// WithPublisher sets where the task events of VM containers go
// (containerd's event service: pass the publisher the Wasm backend uses,
// task/events.NewRemotePublisher). The forwarder (task/forward) publishes
// /tasks/create, /tasks/start, /tasks/exec-added, /tasks/exec-started,
// /tasks/exit (with the exit status and time the guest agent's Wait
// reports) and /tasks/delete, in order, through a task/events.Queue per
// sandbox. Without it events are dropped, and containerd learns of exits
// through Wait only.
func WithPublisher(p events.Publisher) Option { return func(b *Backend) { b.publisher = p } }

// guest is the VM backend's half of the Task API forwarder
// (task/forward.Host): the agent connection, and each container's bundle
// and rootfs in the sandbox's shared directory, where the guest finds them
// at vm.GuestSharedDir/<id>.
type guest struct{ i *Instance }

var _ forward.Host = guest{}

// newForwarder returns the Task API of sandbox i.
func newForwarder(i *Instance) *forward.Forwarder {
	return forward.New(forward.Config{Sandbox: i.sb.ID, Namespace: i.sb.Namespace, Host: guest{i}, Events: i.events})
}

// Agent returns the agent's services while the VM runs.
func (g guest) Agent() (taskAPI.TTRPCTaskService, agentapi.AgentService, error) {
	i := g.i
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.task == nil || i.exit != nil {
		return nil, nil, fmt.Errorf("sandbox %s is not running: %w", i.sb.ID, errdefs.ErrFailedPrecondition)
	}
	return i.task, i.agent, nil
}

// ShimPid is the VMM's pid.
func (g guest) ShimPid() uint32 { return g.i.Pid() }

// guestBundle is where the guest sees a container's bundle.
func guestBundle(id string) string { return vm.GuestSharedDir + "/" + id }

// Prepare makes <shared>/<id> with the container's rootfs mounted at
// rootfs/ (or, for the container whose rootfs came as a disk at boot, the
// overlay's path in the guest as root.path) and its config.json.
func (g guest) Prepare(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (string, error) {
	i := g.i
	// The shared directory is writable by the guest: everything below it
	// is created and used through fds (share.go), never by name.
	cdir, err := makeShareDir(ctx, i.spec.SharedDir, r.ID)
	if err != nil {
		return "", err
	}
	defer cdir.Close()
	guestRoot := "rootfs"
	if blk := i.block; blk != nil && blk.cid == r.ID && len(r.Rootfs) == 0 {
		guestRoot = blk.guestRoot() // nothing to mount on the host
	} else if err := mountRootfs(r, spec, cdir); err != nil {
		return "", err
	}
	if spec.Root == nil {
		spec.Root = &specs.Root{}
	}
	spec.Root.Path = guestRoot
	b, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	if err := writeNew(cdir, "config.json", b); err != nil {
		return "", fmt.Errorf("container %s: writing its config.json in the shared directory: %w", r.ID, err)
	}
	return guestBundle(r.ID), nil
}

// Release unmounts the container's rootfs and removes its directory from
// the shared directory.
func (g guest) Release(ctx context.Context, id string) error {
	return cleanupDir(filepath.Join(g.i.spec.SharedDir, id))
}

// mountRootfs mounts a container's rootfs at rootfs/ in its directory of
// the shared directory (cdir): the request's rootfs mounts, or else a bind
// mount of the bundle's root.path. The mount point is created and mounted
// on through its fd, so a guest that swaps it for a symlink cannot make the
// host mount anywhere else.
func mountRootfs(r *taskAPI.CreateTaskRequest, spec *specs.Spec, cdir *fsroot.Root) error {
	target, err := mountPoint(cdir, "rootfs")
	if err != nil {
		return fmt.Errorf("container %s: rootfs mount point in the shared directory: %w", r.ID, err)
	}
	defer unix.Close(target)
	if len(r.Rootfs) > 0 {
		if err := mount.All(mount.FromProto(r.Rootfs), procFd(target)); err != nil {
			return fmt.Errorf("mounting rootfs of container %s: %w", r.ID, err)
		}
		return nil
	}
	src := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		src = spec.Root.Path
	}
	srcFd, err := openBundleDir(r.Bundle, src)
	if err != nil {
		return fmt.Errorf("container %s: rootfs %s is not a directory (no rootfs mounts in the request and no root.path in the bundle): %w: %w", r.ID, src, err, errdefs.ErrInvalidArgument)
	}
	defer unix.Close(srcFd)
	if err := unix.Mount(procFd(srcFd), procFd(target), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting rootfs %s of container %s: %w", src, r.ID, err)
	}
	return nil
}

// cleanupDir unmounts everything under dir, then removes dir. It never
// removes anything while a mount is left below dir: that mount may be a
// container's real rootfs (an image snapshot, or the user's directory in
// RunWorkload), and RemoveAll would delete its contents.
func cleanupDir(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return removeUnmounted(dir)
}

// removeUnmounted removes dir unless something is still mounted below it.
func removeUnmounted(dir string) error {
	left, err := mountPoints(dir)
	if err != nil {
		return fmt.Errorf("not removing %s: %w", dir, err)
	}
	if len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %v: %w", dir, left, errdefs.ErrFailedPrecondition)
	}
	return os.RemoveAll(dir)
}
