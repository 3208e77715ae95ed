package vmbackend

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/log"
)

// orphanTaskTimeout bounds the kill, wait and delete of one container the
// guest still runs after a sandboxer restart, and one State probe of it.
const orphanTaskTimeout = 10 * time.Second

// strayContainers lists the containers whose bundles are in the shared
// directory but that the forwarder does not know: the host created them
// before the sandboxer that created them died.
func (i *Instance) strayContainers() []string {
	ents, err := os.ReadDir(i.spec.SharedDir)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range ents {
		if e.IsDir() && !i.tasks.Knows(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// reapGuestTasks ends every container the guest still runs when the
// sandboxer re-attaches after a crash, and removes its bundle and rootfs
// mount from the shared directory.
//
// containerd already counts those containers as exited: when the Task API
// connection of a sandbox closes (the sandboxer died), containerd publishes
// an exit for each of its tasks (with the status containerd-shim-kuasar-v1
// delete reports) and drops them from its task list, so it never calls
// Delete for them again. A container left running would be invisible to
// containerd and the kubelet, which starts a second copy beside it. See
// RATIONALE.md ("After a crash").
//
// The containers are found by their bundle directories in the shared
// directory (one per container the host created). It returns how many
// were found.
func (i *Instance) reapGuestTasks(ctx context.Context) int {
	i.mu.Lock()
	cl := i.task
	i.mu.Unlock()
	if cl == nil {
		return 0
	}
	lg := log.G(ctx).WithField("sandbox", i.sb.ID)
	ids := i.strayContainers()
	for _, id := range ids {
		reapGuestTask(ctx, cl, id)
		if err := cleanupDir(filepath.Join(i.spec.SharedDir, id)); err != nil {
			lg.WithField("container", id).WithError(err).Warn("vm: removing the bundle of a container lost in a restart")
			continue
		}
		lg.WithField("container", id).Info("vm: a container containerd counted as exited when the sandboxer died was killed and removed from the guest")
	}
	return len(ids)
}

// reapGuestTask SIGKILLs every process of container id in the guest, waits
// (polling State, each call under the one deadline) until it has stopped,
// then deletes it.
func reapGuestTask(ctx context.Context, cl taskAPI.TTRPCTaskService, id string) {
	kctx, cancel := context.WithTimeout(ctx, orphanTaskTimeout)
	defer cancel()
	st, err := cl.State(kctx, &taskAPI.StateRequest{ID: id})
	if err != nil {
		return // the guest never created it (crash during Create)
	}
	if st.Status != tasktypes.Status_STOPPED && st.Status != tasktypes.Status_CREATED {
		// A created one is killed by Delete itself.
		_, _ = cl.Kill(kctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true})
	}
	for kctx.Err() == nil {
		st, err := cl.State(kctx, &taskAPI.StateRequest{ID: id})
		if err != nil || st.Status == tasktypes.Status_STOPPED || st.Status == tasktypes.Status_CREATED {
			break
		}
		select {
		case <-kctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, _ = cl.Delete(kctx, &taskAPI.DeleteRequest{ID: id})
}

// strayGuestTasks counts the containers the guest runs that the forwarder
// does not know (none once reapGuestTasks ran), so that Status counts what
// really runs and not only what this process created. Each is one State
// call to the agent, under its own deadline.
func (i *Instance) strayGuestTasks(ctx context.Context) uint32 {
	ids := i.strayContainers()
	if len(ids) == 0 {
		return 0
	}
	i.mu.Lock()
	cl := i.task
	i.mu.Unlock()
	if cl == nil {
		return 0
	}
	n := uint32(0)
	for _, id := range ids {
		pctx, cancel := context.WithTimeout(ctx, orphanTaskTimeout)
		st, err := cl.State(pctx, &taskAPI.StateRequest{ID: id})
		cancel()
		if err == nil && st.Status != tasktypes.Status_STOPPED {
			n++
		}
	}
	return n
}
