// Package vmbackend is the "vm" backend.Backend: each sandbox is a micro-VM
// (QEMU here; Cloud Hypervisor and StratoVirt drivers exist too) whose
// guest agent (cmd/kuasar-task) runs the containers. The host side shares
// a per-sandbox directory with the guest (9p tag "kuasar", mounted at
// /run/kuasar/shared), bind-mounts each container's rootfs into it, and
// forwards the Task API over the agent's ttrpc connection while pumping the
// containers' stdio between the host FIFOs and the agent's stream RPCs.
// A backend made for one known container (WithBootRootfs, `kuasar run`)
// can instead hand that container's rootfs over as an erofs image on
// virtio-blk (rootfs_mode "block"), overlaid with a tmpfs in the guest.
package vmbackend

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/internal/crashpoint"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/stratovirt"
	"github.com/kuasar-go/kuasar/vm/internal/template"
)

// Name is the backend kind.
const Name = "vm"

// DefaultAgentTimeout bounds how long Start waits for the guest agent to
// answer: generous because a guest under TCG needs several seconds.
const DefaultAgentTimeout = 60 * time.Second

// Backend boots one micro-VM per sandbox.
type Backend struct {
	configs      map[string]vm.Config
	defaultHV    string
	agentTimeout time.Duration
	publisher    events.Publisher
	boot         *bootRootfs
	templates    *template.Store // nil: no templates
	// templateMemDir is where templates' memory files are (a tmpfs).
	templateMemDir string
	// pool keeps restored clones ready (template_pool); nil when no
	// hypervisor has one.
	pool   *pool
	noPool bool // WithoutPool
	// knownVersions primes the QEMU driver with the versions kept
	// templates recorded, once.
	knownVersions sync.Once
}

// bootRootfs is the rootfs of the one container known before boot
// (WithBootRootfs).
type bootRootfs struct {
	cid, dir, mkfs string
}

var _ backend.Backend = (*Backend)(nil)

// Option configures a Backend.
type Option func(*Backend)

// WithHypervisor sets the configuration of hypervisor name ("qemu",
// "cloud-hypervisor", "stratovirt"): a [hypervisor.NAME] section.
func WithHypervisor(name string, c vm.Config) Option {
	return func(b *Backend) { b.configs[name] = c }
}

// WithDefaultHypervisor names the hypervisor used when a sandbox names
// none ([hypervisor] default); "qemu" when not set.
func WithDefaultHypervisor(name string) Option {
	return func(b *Backend) { b.defaultHV = name }
}

// WithAgentTimeout bounds the wait for the guest agent at Start.
func WithAgentTimeout(d time.Duration) Option {
	return func(b *Backend) { b.agentTimeout = d }
}

// WithBootRootfs names the one container whose rootfs (the directory dir)
// is known before its sandbox boots, as for `kuasar run`. With rootfs_mode
// "block" Start builds an erofs image of dir (with mkfsErofs, MkfsErofs
// from PATH when empty) into the sandbox's state directory and attaches it
// at boot; the Create of containerID with no rootfs mounts then uses it.
// In the other modes the option changes nothing: Create bind-mounts the
// spec's root.path as usual.
func WithBootRootfs(containerID, dir, mkfsErofs string) Option {
	return func(b *Backend) { b.boot = &bootRootfs{cid: containerID, dir: dir, mkfs: mkfsErofs} }
}

// New returns the "vm" backend.
func New(ctx context.Context, opts ...Option) (*Backend, error) {
	b := &Backend{configs: map[string]vm.Config{}, defaultHV: vm.QEMU, agentTimeout: DefaultAgentTimeout}
	for _, o := range opts {
		o(b)
	}
	for name, c := range b.configs {
		if err := checkTemplateSetting(name, c); err != nil {
			return nil, err
		}
		if err := checkPoolSetting(name, c); err != nil {
			return nil, err
		}
		if c.TemplatePool > 0 && b.pool == nil && !b.noPool {
			b.pool = newPool(b)
		}
	}
	switch b.defaultHV {
	case vm.QEMU, vm.CloudHypervisor, vm.StratoVirt:
	default:
		return nil, fmt.Errorf("default hypervisor %q: use qemu, cloud-hypervisor or stratovirt ([hypervisor] default): %w", b.defaultHV, errdefs.ErrInvalidArgument)
	}
	b.reapTemplateBuilds(ctx)
	return b, nil
}

// Name returns "vm".
func (b *Backend) Name() string { return Name }

// driver is what the backend needs from a hypervisor driver beyond
// vm.Hypervisor: optional health checks and re-attach.
type driver interface {
	vm.Hypervisor
}

type healthChecker interface {
	Health(ctx context.Context) error
}

type attacher interface {
	Attach(ctx context.Context, pid int) error
}

func (b *Backend) newDriver(name string, spec vm.Spec) (driver, error) {
	c, ok := b.configs[name]
	if !ok {
		return nil, fmt.Errorf("hypervisor %q has no [hypervisor.%s] section configured: %w", name, name, errdefs.ErrFailedPrecondition)
	}
	spec.Config = c
	switch name {
	case vm.QEMU:
		return qemu.New(spec)
	case vm.CloudHypervisor:
		return cloudhypervisor.New(spec)
	case vm.StratoVirt:
		return stratovirt.New(spec)
	}
	return nil, fmt.Errorf("unknown hypervisor %q (kuasar.io/hypervisor): use qemu, cloud-hypervisor or stratovirt: %w", name, errdefs.ErrInvalidArgument)
}

func (b *Backend) spec(name string, sb backend.Sandbox) (vm.Spec, error) {
	c, ok := b.configs[name]
	if !ok {
		return vm.Spec{}, fmt.Errorf("hypervisor %q has no [hypervisor.%s] section configured: %w", name, name, errdefs.ErrFailedPrecondition)
	}
	if sb.StateDir == "" {
		return vm.Spec{}, fmt.Errorf("sandbox %s has no state directory: %w", sb.ID, errdefs.ErrInvalidArgument)
	}
	vcpus, mem := vm.Sizes(c, vm.Resources(sb.Resources))
	return vm.Spec{
		ID:        sb.ID,
		StateDir:  filepath.Join(sb.StateDir, "vm"),
		SharedDir: filepath.Join(sb.StateDir, "shared"),
		VCPUs:     vcpus,
		MemoryMB:  mem,
	}, nil
}

func (b *Backend) hypervisorName(sb backend.Sandbox) string {
	if sb.Hypervisor != "" {
		return sb.Hypervisor
	}
	return b.defaultHV
}

// Start boots the sandbox's VM, waits for its agent and sets the sandbox
// up. A failure leaves no VMM process, socket, mount or directory it made.
func (b *Backend) Start(ctx context.Context, sb backend.Sandbox) (_ backend.Instance, retErr error) {
	name := b.hypervisorName(sb)
	if b.boot == nil || b.configs[name].RootfsMode != vm.ShareBlock || sb.StateDir == "" {
		return b.start(ctx, sb, nil)
	}
	// Built per sandbox into its state directory: about 2.4 s per GB of
	// rootfs, nothing for small images; a cache keyed by path and mtime
	// would miss changes below the top directory.
	blk := &blockRootfs{cid: b.boot.cid, image: filepath.Join(sb.StateDir, "rootfs.erofs"), device: vm.GuestDiskPath(0)}
	if err := os.MkdirAll(sb.StateDir, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(blk.image)
		}
	}()
	if err := buildErofs(ctx, b.boot.mkfs, b.boot.dir, blk.image); err != nil {
		return nil, err
	}
	return b.start(ctx, sb, blk)
}

// start is Start with, for rootfs_mode "block", the one container rootfs
// image attached at boot (WithBootRootfs); blk is nil for pods.
func (b *Backend) start(ctx context.Context, sb backend.Sandbox, blk *blockRootfs) (_ backend.Instance, retErr error) {
	name := b.hypervisorName(sb)
	spec, err := b.spec(name, sb)
	if err != nil {
		return nil, err
	}
	if b.configs[name].RootfsMode == vm.ShareBlock {
		switch {
		case blk == nil:
			return nil, fmt.Errorf("rootfs_mode \"block\" in [hypervisor.%s] works only for `kuasar run --isolation vm` (WithBootRootfs), whose one container is known before the VM boots: "+
				"a pod's containers arrive after boot and the backend does not hotplug disks (QEMU's microvm machine cannot); use rootfs_mode = \"9p\" (qemu) or \"virtiofs\" for pods: %w", name, errdefs.ErrNotImplemented)
		case name != vm.QEMU:
			return nil, fmt.Errorf("rootfs_mode \"block\" in [hypervisor.%s] is implemented for qemu only: use virtiofs with %s: %w", name, name, errdefs.ErrNotImplemented)
		}
		spec.Disks = []vm.Disk{blk.disk()}
	}
	if blk == nil {
		if inst, err := b.fromPool(ctx, sb, name, spec); inst != nil || err != nil {
			return b.startAdopted(ctx, inst, err)
		}
	}
	d, err := b.newDriver(name, spec)
	if err != nil {
		return nil, err
	}
	for _, dir := range []string{spec.StateDir, spec.SharedDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	inst := newInstance(sb, name, spec, d, b.publisher)
	if len(spec.Disks) > 0 {
		inst.block = blk
	}
	defer func() {
		if retErr != nil {
			_ = inst.Shutdown(context.WithoutCancel(ctx))
			_ = removeUnmounted(spec.StateDir)
		}
	}()
	if os.Geteuid() == 0 {
		if err := makeSharedMount(spec.SharedDir); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	inst.started = t0
	d, err = b.startVM(ctx, inst, name, d)
	if d != nil {
		inst.hv = d
	}
	if err != nil {
		return nil, fmt.Errorf("start %s for sandbox %s: %w", name, sb.ID, err)
	}
	inst.timings.VMMStarted = time.Since(t0)
	crashpoint.Hit("vm.vmm-started")
	if err := inst.connect(ctx, b.agentTimeout); err != nil {
		return nil, err
	}
	inst.timings.AgentReady = time.Since(t0)
	crashpoint.Hit("vm.agent-ready")
	if err := inst.setup(ctx); err != nil {
		return nil, err
	}
	inst.timings.SandboxReady = time.Since(t0)
	inst.watch()
	log.G(ctx).WithField("sandbox", sb.ID).WithField("hypervisor", name).WithField("pid", d.Pid()).
		WithField("agent_ready", inst.timings.AgentReady).Info("vm: sandbox started")
	b.wantPool(ctx, inst)
	return inst, nil
}

// startAdopted finishes the start of a sandbox that adopted a pool clone
// (see fromPool): the sandbox's own SetupSandbox (hostname, clock,
// entropy; the share is already mounted). A failure shuts the clone down
// and leaves nothing in the sandbox's directory.
func (b *Backend) startAdopted(ctx context.Context, inst *Instance, err error) (_ backend.Instance, retErr error) {
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = inst.Shutdown(context.WithoutCancel(ctx))
			_ = removeUnmounted(inst.spec.StateDir)
		}
	}()
	crashpoint.Hit("vm.pool-adopted")
	if err := inst.setup(ctx); err != nil {
		return nil, err
	}
	inst.timings.SandboxReady = time.Since(inst.started)
	log.G(ctx).WithField("sandbox", inst.sb.ID).WithField("hypervisor", inst.hvName).WithField("pid", inst.Pid()).
		WithField("clone", inst.vmID).WithField("sandbox_ready", inst.timings.SandboxReady).Info("vm: sandbox started from a pool clone")
	return inst, nil
}

// checkpoint is what Recover needs to find a live VMM again.
type checkpoint struct {
	Hypervisor string `json:"hypervisor"`
	Pid        int    `json:"pid"`
	// VM is the VM's own ID when it is not the sandbox's: a clone
	// adopted from the warm pool keeps the ID its QEMU runs with.
	VM string `json:"vm,omitempty"`
}

// Recover re-attaches to a sandbox's VMM if it still runs (same pid and
// command line), reconnecting the agent channel; otherwise it returns an
// instance reporting the sandbox exited with 137 that can be shut down.
func (b *Backend) Recover(ctx context.Context, sb backend.Sandbox, cp []byte) (backend.Instance, error) {
	var c checkpoint
	if err := json.Unmarshal(cp, &c); err != nil {
		return nil, fmt.Errorf("vm checkpoint of sandbox %s: %w: %w", sb.ID, err, errdefs.ErrInvalidArgument)
	}
	if c.Hypervisor == "" {
		c.Hypervisor = b.hypervisorName(sb)
	}
	spec, err := b.spec(c.Hypervisor, sb)
	if err != nil {
		return nil, err
	}
	if c.VM != "" {
		spec.ID = c.VM
	}
	// Idle pool clones of the run that ended are nobody's.
	b.pool.sweep(filepath.Dir(sb.StateDir))
	d, err := b.newDriver(c.Hypervisor, spec)
	if err != nil {
		return exitedInstance(sb, c.Hypervisor, spec, nil), nil
	}
	a, ok := d.(attacher)
	if !ok || c.Pid == 0 {
		return exitedInstance(sb, c.Hypervisor, spec, d), nil
	}
	if err := a.Attach(ctx, c.Pid); err != nil {
		log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Info("vm: VMM gone, sandbox reported exited")
		return exitedInstance(sb, c.Hypervisor, spec, d), nil
	}
	inst := newInstance(sb, c.Hypervisor, spec, d, b.publisher)
	inst.vmID = c.VM
	if err := inst.connect(ctx, 15*time.Second); err != nil {
		_ = inst.events.Close(ctx)
		log.G(ctx).WithField("sandbox", sb.ID).WithError(err).Warn("vm: VMM runs but agent unreachable; stopping it")
		_ = d.Stop(ctx, time.Second)
		return exitedInstance(sb, c.Hypervisor, spec, d), nil
	}
	inst.reapGuestTasks(ctx)
	inst.watch()
	return inst, nil
}
