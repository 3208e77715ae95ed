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
// guest still runs after a sandboxer restart.
const orphanTaskTimeout = 10 * time.Second

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
// RATIONALE.md ("A VM container outlives no crash").
//
// The containers are found by their bundle directories in the shared
// directory (one per container the host created). It returns how many
// were found.
func (i *Instance) reapGuestTasks(ctx context.Context) int {
	i.mu.Lock()
	cl := i.task
	i.mu.Unlock()
	ents, err := os.ReadDir(i.spec.SharedDir)
	if err != nil || cl == nil {
		return 0
	}
	lg := log.G(ctx).WithField("sandbox", i.sb.ID)
	n := 0
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		id := e.Name()
		n++
		reapGuestTask(ctx, cl, id)
		dir := filepath.Join(i.spec.SharedDir, id)
		if err := unmountUnder(dir); err != nil {
			lg.WithField("container", id).WithError(err).Warn("vm: unmounting the rootfs of a container lost in a restart")
			continue
		}
		if left := mountPoints(dir); len(left) == 0 {
			_ = os.RemoveAll(dir)
		}
		lg.WithField("container", id).Info("vm: container containerd counted as exited in the sandboxer's restart was killed and removed from the guest")
	}
	return n
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
