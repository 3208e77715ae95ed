package vmbackend

import (
	"context"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// WithPublisher sets where the task events of VM containers go
// (containerd's event service: pass the publisher the Wasm backend uses,
// task/events.NewRemotePublisher). The forwarder publishes /tasks/create,
// /tasks/start, /tasks/exec-added, /tasks/exec-started, /tasks/exit (with
// the exit status and time the guest agent's Wait reports) and
// /tasks/delete, in order, through a task/events.Queue per sandbox.
// Without it events are dropped, and containerd learns of exits through
// Wait only.
func WithPublisher(p events.Publisher) Option { return func(b *Backend) { b.publisher = p } }

// namespace is the request's containerd namespace, or the sandbox's when
// the request carries none.
func (f *forwarder) namespace(ctx context.Context) string {
	if ns, ok := namespaces.Namespace(ctx); ok && ns != "" {
		return ns
	}
	return f.inst.sb.Namespace
}

// publish queues one task event; it never blocks.
func (f *forwarder) publish(ns, topic string, ev events.Event) {
	f.inst.events.Publish(ns, topic, ev)
}

// watchExit waits in the background for process (cid, eid) to end in the
// guest and publishes /tasks/exit with the status and time the agent
// reports, once the output pumps have drained. It gives up silently when
// the VM goes away (vmGone cancels waits).
func (f *forwarder) watchExit(cl taskAPI.TTRPCTaskService, ns, cid, eid string, pid uint32) {
	f.mu.Lock()
	ctx := f.waits
	f.mu.Unlock()
	go func() {
		resp, err := cl.Wait(ctx, &taskAPI.WaitRequest{ID: cid, ExecID: eid})
		if err != nil {
			if ctx.Err() == nil {
				log.L.WithField("sandbox", f.inst.sb.ID).WithField("container", cid).WithField("exec", eid).WithError(err).
					Debug("vm: waiting for the exit to publish /tasks/exit")
			}
			return
		}
		f.waitPumps(cid, eid, 5*time.Second)
		id := eid
		if id == "" {
			id = cid
		}
		at := resp.GetExitedAt()
		if at == nil {
			at = timestamppb.Now()
		}
		f.publish(ns, runtime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: cid, ID: id, Pid: pid, ExitStatus: resp.GetExitStatus(), ExitedAt: at,
		})
	}()
}
