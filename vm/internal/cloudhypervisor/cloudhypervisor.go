// Package cloudhypervisor drives Cloud Hypervisor micro-VMs through its
// REST API on --api-socket (vm.create, vm.boot, vm.shutdown, vmm.shutdown,
// vm.info and the hot-plug calls; vm.pause, vm.snapshot, vm.restore and
// vm.resume for templates, see template.go), with the guest agent reached
// over hybrid vsock and the shared directory over virtio-fs (virtiofsd).
//
// Cloud Hypervisor cannot be obtained on the machine this was written on:
// the driver is verified against its specification only (the OpenAPI
// description, checked request by request in the tests, and the hybrid
// vsock handshake against a fake peer).
package cloudhypervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/virtiofs"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// File names inside the VM's state directory.
const (
	APISocketName    = "api.sock"
	VsockSocketName  = "vsock.sock"
	FSSocketName     = "virtiofs.sock"
	ConsoleLogName   = "console.log"
	VMMLogName       = "vmm.log"
	VirtioFSDLogName = "virtiofsd.log"
)

// GuestCID is the guest's vsock context id (each VM has its own hybrid
// vsock socket, so the CID need not be unique across VMs).
const GuestCID = 3

// VM is one Cloud Hypervisor process and its guest.
type VM struct {
	spec vm.Spec

	mu     sync.Mutex
	proc   atomic.Pointer[vmm.Process] // stored under mu, loaded without it
	fsd    *vmm.Process
	client *Client
	// snap is set for a VM that is or builds a template: its config
	// names the canonical paths (see template.go).
	snap *snapMode
}

var _ vm.Hypervisor = (*VM)(nil)

// New returns a VM for spec; nothing runs until Start.
func New(spec vm.Spec) (*VM, error) {
	if err := virtiofs.Check(spec, vm.CloudHypervisor, "Cloud Hypervisor"); err != nil {
		return nil, err
	}
	for _, a := range spec.Config.ExtraArgs {
		if a == "--seccomp" || strings.HasPrefix(a, "--seccomp=") {
			return nil, fmt.Errorf("extra_args in [hypervisor.cloud-hypervisor] hold %s: the driver always runs Cloud Hypervisor with --seccomp true; remove it: %w", a, errdefs.ErrInvalidArgument)
		}
	}
	return &VM{spec: spec}, nil
}

// Args is Cloud Hypervisor's command line (without the binary): the API
// socket, its seccomp filter on (--seccomp true: the documented default,
// made explicit), then extra_args.
func (v *VM) Args() []string {
	return append([]string{"--api-socket", "path=" + v.path(APISocketName), "--seccomp", "true"}, v.spec.Config.ExtraArgs...)
}

func (v *VM) path(n string) string { return filepath.Join(v.spec.StateDir, n) }

// Cmdline is the guest kernel command line.
func (v *VM) Cmdline() string {
	p := []string{"console=ttyS0", "quiet", "panic=-1", "cryptomgr.notests", "audit=0",
		"random.trust_cpu=on", "kuasar.channel=vsock"}
	if v.spec.Config.Debug {
		p = append(p, "kuasar.debug=1")
	}
	return strings.Join(append(p, v.spec.Config.KernelParams...), " ")
}

// VMConfig is the vm.create body for this VM.
func (v *VM) VMConfig() VmConfig {
	vcpus, mem := v.spec.VCPUs, v.spec.MemoryMB
	if vcpus == 0 || mem == 0 {
		vcpus, mem = vm.Sizes(v.spec.Config, vm.Resources{})
	}
	c := VmConfig{
		Cpus:    &CpusConfig{BootVcpus: int(vcpus), MaxVcpus: int(vcpus)},
		Memory:  &MemoryConfig{Size: int64(mem) << 20},
		Payload: PayloadConfig{Kernel: v.spec.Config.Kernel, Initramfs: v.spec.Config.Initramfs, Cmdline: v.Cmdline()},
		Serial:  &ConsoleConfig{Mode: "File", File: v.configPath(ConsoleLogName)},
		Console: &ConsoleConfig{Mode: "Off"},
		Vsock:   &VsockConfig{Cid: GuestCID, Socket: v.configPath(VsockSocketName), ID: "agent"},
		// Landlock limits the VMM to the files of this config; the state
		// directory (hybrid vsock connects to <socket>_<port> there) is
		// added.
		LandlockEnable: true,
		LandlockRules:  []LandlockConfig{{Path: v.configPath(""), Access: "rw"}},
	}
	if v.snap != nil {
		// Where a template's snapshot is written, and read by its clones.
		c.LandlockRules = append(c.LandlockRules, LandlockConfig{Path: SnapshotDir, Access: "rw"})
	}
	if virtiofs.Used(v.spec) {
		c.Memory.Shared = true
		c.Fs = []FsConfig{{Tag: vm.ShareTag, Socket: v.configPath(FSSocketName), NumQueues: 1, QueueSize: 1024, ID: "shared"}}
	}
	return c
}

// configPath is where the VM's config names file name of its state
// directory (the directory itself for ""): the state directory, or for a
// template and its clones the canonical VMDir, which each one's own
// mount namespace binds to its own state directory.
func (v *VM) configPath(name string) string {
	if v.snap != nil {
		return filepath.Join(VMDir, name)
	}
	return filepath.Join(v.spec.StateDir, name)
}

// Start launches virtiofsd (for virtio-fs) and Cloud Hypervisor, then
// creates and boots the VM over the API.
func (v *VM) Start(ctx context.Context) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vmm.Prepare(v.proc.Load(), v.spec.ID, v.spec.StateDir); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			v.cleanupLocked()
		}
	}()
	if err := v.launchLocked(ctx); err != nil {
		return err
	}
	if err := v.client.Create(ctx, v.VMConfig()); err != nil {
		return err
	}
	return v.client.Boot(ctx)
}

// launchLocked starts virtiofsd (for virtio-fs) and the VMM (in a mount
// namespace of its own for a template or clone, see template.go) and
// waits for its API to answer vmm.ping.
func (v *VM) launchLocked(ctx context.Context) error {
	fsd, err := virtiofs.Start(v.spec, vm.CloudHypervisor, v.path(FSSocketName), v.path(VirtioFSDLogName))
	if err != nil {
		return err
	}
	if v.fsd = fsd; fsd != nil {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := vmm.WaitForFile(wctx, fsd, "virtiofsd", v.path(FSSocketName))
		cancel()
		if err != nil {
			return err
		}
	}
	api := v.path(APISocketName)
	_ = os.Remove(api)
	var p *vmm.Process
	if v.snap != nil {
		p, err = v.startInNamespace()
	} else {
		p, err = vmm.StartConfigured(vm.CloudHypervisor, "path", v.spec.Config.Path, v.Args(), v.path(VMMLogName))
	}
	if err != nil {
		return err
	}
	v.proc.Store(p)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := vmm.WaitForSocket(wctx, p, api); err != nil {
		return err
	}
	_ = os.Chmod(api, 0o600)
	v.client = NewClient(api)
	_, err = v.client.Ping(ctx)
	return err
}

// Pid is the VMM's pid.
func (v *VM) Pid() int { return v.proc.Load().Pid() }

// DialAgent connects to the agent's vsock port through hybrid vsock,
// retrying until the guest listens or ctx ends.
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	var c net.Conn
	err := vmm.Poll(ctx, v.proc.Load(), 100*time.Millisecond, func() (err error) {
		c, err = DialHybridVsock(ctx, v.path(VsockSocketName), vm.AgentVsockPort)
		return err
	}, func(exited bool, last error) error {
		if exited {
			return fmt.Errorf("cloud-hypervisor is not running: %w", errdefs.ErrUnavailable)
		}
		return fmt.Errorf("agent vsock port %d: %w: %w", vm.AgentVsockPort, ctx.Err(), last)
	})
	return c, err
}

// HealthProbeTimeout bounds one API probe of Health.
const HealthProbeTimeout = 3 * time.Second

// Health reports an error when the VMM is gone, its API does not answer
// within HealthProbeTimeout, or the VM is not running.
func (v *VM) Health(ctx context.Context) error {
	v.mu.Lock()
	p, c := v.proc.Load(), v.client
	v.mu.Unlock()
	if p.Exited() {
		return fmt.Errorf("cloud-hypervisor is not running: %w", errdefs.ErrUnavailable)
	}
	// One probe, one short deadline: a VMM whose API stopped answering
	// must not hold the caller for its whole timeout.
	pctx, cancel := context.WithTimeout(ctx, HealthProbeTimeout)
	defer cancel()
	info, err := c.Info(pctx)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor of VM %s: probe API vm.info (deadline %v): %w: %w", v.spec.ID, HealthProbeTimeout, err, errdefs.ErrUnavailable)
	}
	if info.State != "Running" {
		return fmt.Errorf("cloud-hypervisor reports the VM %s: %w", info.State, errdefs.ErrUnavailable)
	}
	return nil
}

// ConsoleLog is the guest serial console log.
func (v *VM) ConsoleLog() string { return v.path(ConsoleLogName) }

// Capabilities of the Cloud Hypervisor driver.
func (v *VM) Capabilities() vm.Capabilities {
	return vm.Capabilities{ShareModes: []string{vm.ShareVirtioFS, vm.ShareBlock}, Channel: "vsock", Hotplug: true}
}

// Wait blocks until the VMM exits or ctx is done.
func (v *VM) Wait(ctx context.Context) error { return v.proc.Load().Wait(ctx) }

// Stop shuts the VM and the VMM down over the API, killing the VMM after
// timeout, then virtiofsd; it removes the sockets.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if c := v.client; c != nil {
		vmm.Quit(ctx, v.proc.Load(), timeout, func(ctx context.Context) {
			_ = c.Shutdown(ctx)
			_ = c.ShutdownVMM(ctx)
		})
	}
	v.cleanupLocked()
	return nil
}

func (v *VM) cleanupLocked() {
	v.proc.Load().Kill()
	v.fsd.Kill()
	for _, s := range []string{APISocketName, VsockSocketName, FSSocketName} {
		if err := os.Remove(v.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
	}
}
