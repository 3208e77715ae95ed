package vmbackend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/task/agent/agentapi"
	taskevents "github.com/kuasar-go/kuasar/task/events"
	"github.com/kuasar-go/kuasar/task/forward"
	"github.com/kuasar-go/kuasar/vm"
)

// Timings are the phases of a sandbox start, measured from the VMM launch.
type Timings struct {
	// VMMStarted is when the VMM process was up (QMP/API answering).
	VMMStarted time.Duration
	// AgentReady is when the agent first answered Ping.
	AgentReady time.Duration
	// SandboxReady is when SetupSandbox had returned.
	SandboxReady time.Duration
}

// Instance is one VM sandbox.
type Instance struct {
	sb     backend.Sandbox
	hvName string
	spec   vm.Spec
	hv     driver

	mu       sync.Mutex
	client   *ttrpc.Client
	task     taskAPI.TTRPCTaskService
	agent    agentapi.AgentService
	guestRel string
	tasks    *forward.Forwarder
	events   *taskevents.Queue // the containers' task events, in order
	stopping bool
	exit     *backend.Exit
	exitCh   chan struct{}
	closed   bool
	timings  Timings
	started  time.Time
	detached bool
	// block is the container rootfs attached as a disk at boot
	// (rootfs_mode "block", WithBootRootfs only); nil otherwise.
	block *blockRootfs
	// template is the digest of the VM template the VM was restored
	// from, "" after a cold boot.
	template string
	// vmID is the VM's own ID when the sandbox adopted a clone from the
	// warm pool ("" otherwise); the clone's shared directory is then
	// already mounted in the guest.
	vmID string
}

var _ backend.Instance = (*Instance)(nil)

func newInstance(sb backend.Sandbox, name string, spec vm.Spec, d driver, pub events.Publisher) *Instance {
	i := &Instance{sb: sb, hvName: name, spec: spec, hv: d, exitCh: make(chan struct{}), events: taskevents.NewQueue(pub)}
	i.tasks = newForwarder(i)
	return i
}

// exitedInstance is a sandbox whose VMM is gone (after Recover).
func exitedInstance(sb backend.Sandbox, name string, spec vm.Spec, d driver) *Instance {
	i := newInstance(sb, name, spec, d, nil)
	i.markExited(137)
	return i
}

func (i *Instance) markExited(status uint32) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.exit != nil {
		return
	}
	i.exit = &backend.Exit{Status: status, ExitedAt: time.Now()}
	close(i.exitCh)
}

// connect dials the agent channel and waits until Ping answers, failing
// fast if the VMM dies or reports the guest broken.
func (i *Instance) connect(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(err error) error {
		return fmt.Errorf("guest agent of sandbox %s is %w: it did not answer within %v (%w); see the guest console log %s",
			i.sb.ID, errdefs.ErrUnavailable, timeout, err, i.hv.ConsoleLog())
	}
	unhealthy := func(err error) error {
		return fmt.Errorf("VM of sandbox %s failed its health probe while waiting for the guest agent: %w; see the guest console log %s",
			i.sb.ID, err, i.hv.ConsoleLog())
	}
	// Watch the VMM while waiting: an exited VMM, a guest in
	// internal-error or a monitor that stopped answering must not make us
	// wait for the whole timeout. Each probe has its own short deadline
	// (inside Health); probeMisses failed probes in a row end the wait.
	health := make(chan error, 1)
	go func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		misses := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			hc, ok := i.hv.(healthChecker)
			if !ok {
				return
			}
			err := hc.Health(ctx)
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				misses = 0
				continue
			}
			// A probe that timed out may be load; a dead VMM or a
			// broken guest is final.
			timedOut := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)
			if misses++; timedOut && misses < probeMisses {
				log.G(ctx).WithField("sandbox", i.sb.ID).WithError(err).Warn("vm: health probe failed")
				continue
			}
			health <- err
			cancel()
			return
		}
	}()
	conn, err := i.hv.DialAgent(ctx)
	if err != nil {
		select {
		case herr := <-health:
			return unhealthy(herr)
		default:
		}
		return fail(err)
	}
	client := ttrpc.NewClient(conn)
	agent := agentapi.NewAgentClient(client)
	for {
		pctx, pcancel := context.WithTimeout(ctx, pingAttempt)
		resp, err := agent.Ping(pctx, &agentapi.PingRequest{})
		pcancel()
		if err == nil {
			i.mu.Lock()
			i.client, i.agent, i.task = client, agent, taskAPI.NewTTRPCTaskClient(client)
			i.guestRel = resp.GetKernelRelease()
			i.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			client.Close()
			select {
			case herr := <-health:
				return unhealthy(herr)
			default:
			}
			return fail(err)
		}
	}
}

// setup sets the guest's hostname and mounts the shared directory (and,
// in block mode, the container's rootfs image with its overlay).
func (i *Instance) setup(ctx context.Context) error {
	host := i.sb.Hostname
	if host == "" {
		host = i.sb.ID
		if len(host) > 12 {
			host = host[:12]
		}
	}
	req := &agentapi.SetupSandboxRequest{
		Hostname:      host,
		ClockUnixNano: time.Now().UnixNano(),
		Entropy:       entropy(),
	}
	if i.vmID == "" {
		// A pool clone mounted its share while it was warmed.
		req.Mounts = []*agentapi.Mount{shareMount(i)}
	}
	if i.block != nil {
		// Bundles still come through the share; the rootfs from the disk.
		req.Mounts = append(req.Mounts, i.block.mounts()...)
	}
	if _, err := i.agent.SetupSandbox(ctx, req); err != nil {
		return fmt.Errorf("setting up sandbox %s in the guest: %w", i.sb.ID, err)
	}
	return nil
}

// watch reports the sandbox exited when the VMM process ends, and cleans
// up the container mounts.
func (i *Instance) watch() {
	go func() {
		_ = i.hv.Wait(context.Background())
		i.mu.Lock()
		if i.detached {
			i.mu.Unlock()
			return
		}
		status := uint32(137)
		if i.stopping {
			status = 0
		}
		i.mu.Unlock()
		i.tasks.Gone()
		// The shared directory's own mount (see makeSharedMount) goes
		// with the VMM too: no mount outlives it.
		if err := unmountUnder(i.spec.SharedDir); err != nil {
			log.L.WithField("sandbox", i.sb.ID).WithError(err).Warn("vm: unmounting the shared directory after the VMM exited")
		}
		i.markExited(status)
	}()
}

type detacher interface {
	Detach()
}

// Detach releases the host side of a running sandbox (agent connection,
// QMP, listeners) without stopping its VM, as a sandboxer restart does;
// Backend.Recover with Checkpoint's bytes re-attaches. After Detach the
// instance must not be used. It returns false when the hypervisor driver
// cannot detach.
func (i *Instance) Detach() bool {
	d, ok := i.hv.(detacher)
	if !ok {
		return false
	}
	i.mu.Lock()
	i.closed, i.detached = true, true
	if i.client != nil {
		i.client.Close()
		i.client = nil
	}
	i.task, i.agent = nil, nil
	i.mu.Unlock()
	d.Detach()
	return true
}

// GuestKernelRelease is what the agent's Ping reported (`uname -r` in the guest).
func (i *Instance) GuestKernelRelease() string { return i.guestRel }

// Timings returns how long the start phases took.
func (i *Instance) Timings() Timings { return i.timings }

// Agent is the guest agent's own service (for tests and diagnostics).
func (i *Instance) Agent() agentapi.AgentService { return i.agent }

// ConsoleLog is the guest console log file.
func (i *Instance) ConsoleLog() string { return i.hv.ConsoleLog() }

// Tasks is the Task API forwarder to the guest agent.
func (i *Instance) Tasks() taskAPI.TTRPCTaskService { return i.tasks }

// Pid is the VMM's pid.
func (i *Instance) Pid() uint32 {
	if i.hv == nil {
		return 0
	}
	return uint32(i.hv.Pid())
}

// Checkpoint records the hypervisor and VMM pid.
func (i *Instance) Checkpoint() []byte {
	b, _ := json.Marshal(checkpoint{Hypervisor: i.hvName, Pid: int(i.Pid()), VM: i.vmID})
	return b
}

// Stop kills every container (SIGKILL after timeout), then ends the VMM
// (QMP quit, SIGKILL after timeout).
func (i *Instance) Stop(ctx context.Context, timeout time.Duration) error {
	i.mu.Lock()
	i.stopping = true
	i.mu.Unlock()
	if i.hv == nil {
		return nil
	}
	if !i.hasExited() {
		i.tasks.KillAll(ctx, timeout)
	}
	if err := i.hv.Stop(ctx, timeout); err != nil {
		return err
	}
	i.tasks.Gone()
	if i.hv.Pid() == 0 {
		i.markExited(0)
	}
	return nil
}

func (i *Instance) hasExited() bool {
	select {
	case <-i.exitCh:
		return true
	default:
		return false
	}
}

// Wait blocks until the VMM has exited.
func (i *Instance) Wait(ctx context.Context) (backend.Exit, error) {
	select {
	case <-i.exitCh:
		// An exit already reported wins over a done ctx.
		ctx = context.Background()
	default:
	}
	select {
	case <-i.exitCh:
		i.mu.Lock()
		defer i.mu.Unlock()
		return *i.exit, nil
	case <-ctx.Done():
		return backend.Exit{}, ctx.Err()
	}
}

// Metrics reports the VMM's resident memory and CPU time and the live
// task count.
func (i *Instance) Metrics(ctx context.Context) (backend.Metrics, error) {
	m := backend.Metrics{Tasks: i.tasks.Count() + i.strayGuestTasks(ctx)}
	pid := int(i.Pid())
	if pid == 0 || i.hasExited() {
		return m, nil
	}
	if err := m.AddProcess(pid); err != nil {
		return m, fmt.Errorf("VMM %d metrics: %w", pid, err)
	}
	return m, nil
}

// Update is not supported: the VM sizes are fixed at boot.
func (i *Instance) Update(ctx context.Context, r backend.Resources) error {
	return fmt.Errorf("resizing a running VM sandbox (no hotplug): recreate the pod with new limits: %w", errdefs.ErrNotImplemented)
}

// Shutdown stops the VM if needed and removes its container mounts,
// sockets and shared directory. It is idempotent.
func (i *Instance) Shutdown(ctx context.Context) error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	i.mu.Unlock()
	var errs []error
	if i.hv != nil {
		if err := i.Stop(ctx, 2*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	i.mu.Lock()
	if i.client != nil {
		i.client.Close()
		i.client = nil
	}
	i.mu.Unlock()
	i.tasks.Gone()
	if err := unmountUnder(i.spec.SharedDir); err != nil {
		errs = append(errs, err)
	}
	if err := removeUnmounted(i.spec.SharedDir); err != nil {
		errs = append(errs, err)
	}
	for _, s := range []string{"qmp.sock", "agent.sock", "api.sock", "vsock.sock"} {
		_ = os.Remove(filepath.Join(i.spec.StateDir, s))
	}
	i.markExited(0)
	// Deliver the events already queued (the last exits, deletes).
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := i.events.Close(qctx); err != nil {
		log.G(ctx).WithField("sandbox", i.sb.ID).WithError(err).Warn("vm: task events not all delivered")
	}
	return errors.Join(errs...)
}

// mountPoints lists the mount points at or below dir, deepest first.
func mountPoints(dir string) ([]string, error) {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("listing the mounts below %s: %w", dir, err)
	}
	targets := make([]string, 0, len(ms))
	for _, m := range ms {
		targets = append(targets, m.Mountpoint)
	}
	sort.Slice(targets, func(a, b int) bool { return len(targets[a]) > len(targets[b]) })
	return targets, nil
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	targets, err := mountPoints(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		if err := unix.Unmount(t, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// probeInterval is how often the VMM is probed while the agent boots;
// probeMisses failed probes in a row (each bounded by its own deadline,
// see qmp.ProbeTimeout) fail the start. A VMM that has exited fails it at
// once.
const (
	probeInterval = 500 * time.Millisecond
	probeMisses   = 3
)

// pingAttempt bounds one Ping while waiting for the agent. QEMU buffers
// what the host writes before the guest opens its port (checked: retried
// Pings were all answered late), so one long attempt is enough and avoids
// ttrpc's "message on inactive stream" noise; the health watcher cancels
// it early when the VMM dies.
const pingAttempt = 5 * time.Minute

// shareMode is the configured rootfs_mode, or the driver's first (default)
// one when none is configured.
func shareMode(c vm.Config, caps vm.Capabilities) string {
	if c.RootfsMode != "" {
		return c.RootfsMode
	}
	if len(caps.ShareModes) > 0 {
		return caps.ShareModes[0]
	}
	return vm.Share9P
}
