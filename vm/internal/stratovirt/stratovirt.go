// Package stratovirt drives StratoVirt micro-VMs: its "-machine microvm"
// command line (kernel, initrd, virtio-blk and vhost-vsock devices,
// virtio-fs through vhost-user-fs) and its QMP dialect for status and
// quit. The agent is reached over AF_VSOCK (vhost-vsock) on port 1024.
//
// StratoVirt cannot be obtained on the machine this was written on: the
// driver is verified against its specification only (command line and
// QMP exchanges checked against a fake QMP peer in the tests).
package stratovirt

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/mdlayher/vsock"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qmp"
	"github.com/kuasar-go/kuasar/vm/internal/virtiofs"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// File names inside the VM's state directory.
const (
	QMPSocketName    = "qmp.sock"
	FSSocketName     = "virtiofs.sock"
	ConsoleLogName   = "console.log"
	VMMLogName       = "vmm.log"
	VirtioFSDLogName = "virtiofsd.log"
)

// VM is one StratoVirt process and its guest.
type VM struct {
	spec vm.Spec
	cid  uint32

	mu   sync.Mutex
	proc atomic.Pointer[vmm.Process] // stored under mu, loaded without it
	fsd  *vmm.Process
	qmp  *QMP
}

var _ vm.Hypervisor = (*VM)(nil)

// New returns a VM for spec; nothing runs until Start.
func New(spec vm.Spec) (*VM, error) {
	if err := virtiofs.Check(spec, vm.StratoVirt, "StratoVirt"); err != nil {
		return nil, err
	}
	for _, a := range spec.Config.ExtraArgs {
		// StratoVirt's seccomp filter is on unless -disable-seccomp is
		// given (config_guidebook.md, "Seccomp"): it must stay on.
		if a == "-disable-seccomp" || a == "--disable-seccomp" {
			return nil, fmt.Errorf("extra_args in [hypervisor.stratovirt] hold %s: StratoVirt's seccomp filter must stay on; remove it: %w", a, errdefs.ErrInvalidArgument)
		}
	}
	return &VM{spec: spec, cid: GuestCID(spec.ID)}, nil
}

// GuestCID derives a vsock context id for a sandbox: vhost-vsock CIDs are
// host-wide, so each VM needs its own (3 and up; 0-2 are reserved).
func GuestCID(id string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return 3 + h.Sum32()%(1<<30)
}

func (v *VM) path(n string) string { return filepath.Join(v.spec.StateDir, n) }

// Cmdline is the guest kernel command line.
func (v *VM) Cmdline() string {
	p := []string{"console=ttyS0", "quiet", "panic=-1", "reboot=k", "pci=off", "cryptomgr.notests",
		"audit=0", "random.trust_cpu=on", "kuasar.channel=vsock"}
	if v.spec.Config.Debug {
		p = append(p, "kuasar.debug=1")
	}
	return strings.Join(append(p, v.spec.Config.KernelParams...), " ")
}

// Args is StratoVirt's command line (without the binary).
func (v *VM) Args() []string {
	vcpus, mem := v.spec.VCPUs, v.spec.MemoryMB
	if vcpus == 0 || mem == 0 {
		vcpus, mem = vm.Sizes(v.spec.Config, vm.Resources{})
	}
	machine := "microvm"
	if virtiofs.Used(v.spec) {
		machine += ",mem-share=on"
	}
	args := []string{
		"-name", "kuasar-" + v.spec.ID,
		"-machine", machine,
		"-smp", strconv.Itoa(int(vcpus)),
		"-m", strconv.FormatUint(mem, 10),
		"-kernel", v.spec.Config.Kernel,
		"-initrd", v.spec.Config.Initramfs,
		"-append", v.Cmdline(),
		"-qmp", "unix:" + v.path(QMPSocketName) + ",server,nowait",
		"-chardev", "file,id=console,path=" + v.ConsoleLog(),
		"-serial", "chardev:console",
		"-device", "vhost-vsock-device,id=vsock0,guest-cid=" + strconv.FormatUint(uint64(v.cid), 10),
	}
	if virtiofs.Used(v.spec) {
		args = append(args,
			"-chardev", "socket,id=virtiofs,path="+v.path(FSSocketName),
			"-device", "vhost-user-fs-device,id=fs0,chardev=virtiofs,tag="+vm.ShareTag,
		)
	}
	return append(args, v.spec.Config.ExtraArgs...)
}

// BlockArgs are the -drive/-device pair that attach a read-only image
// (an erofs container rootfs in "block" mode) as virtio-blk device n.
func BlockArgs(n int, image string) []string {
	id := "drive" + strconv.Itoa(n)
	return []string{
		"-drive", "id=" + id + ",file=" + image + ",readonly=on,direct=off",
		"-device", "virtio-blk-device,drive=" + id + ",id=blk" + strconv.Itoa(n),
	}
}

// Start launches virtiofsd (for virtio-fs) and StratoVirt, then connects
// QMP.
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
	fsd, err := virtiofs.Start(v.spec, vm.StratoVirt, v.path(FSSocketName), v.path(VirtioFSDLogName))
	if err != nil {
		return err
	}
	v.fsd = fsd
	_ = os.Remove(v.path(QMPSocketName))
	p, err := vmm.StartConfigured(vm.StratoVirt, "path", v.spec.Config.Path, v.Args(), v.path(VMMLogName))
	if err != nil {
		return err
	}
	v.proc.Store(p)
	q, err := qmp.Connect(ctx, p, "stratovirt", v.path(QMPSocketName), "", 20*time.Millisecond, DialQMP)
	if err != nil {
		return err
	}
	v.qmp = q
	return nil
}

// Pid is the VMM's pid.
func (v *VM) Pid() int { return v.proc.Load().Pid() }

// DialAgent connects to the guest agent over AF_VSOCK, retrying until the
// guest listens or ctx ends.
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	var c net.Conn
	err := vmm.Poll(ctx, v.proc.Load(), 100*time.Millisecond, func() (err error) {
		c, err = vsock.Dial(v.cid, vm.AgentVsockPort, nil)
		return err
	}, func(exited bool, last error) error {
		if exited {
			return fmt.Errorf("stratovirt is not running: %w", errdefs.ErrUnavailable)
		}
		return fmt.Errorf("agent vsock %d:%d: %w: %w", v.cid, vm.AgentVsockPort, ctx.Err(), last)
	})
	return c, err
}

// Health reports an error when the VMM is gone or the guest is not running.
func (v *VM) Health(ctx context.Context) error {
	v.mu.Lock()
	p, q := v.proc.Load(), v.qmp
	v.mu.Unlock()
	if p.Exited() {
		return fmt.Errorf("stratovirt is not running: %w", errdefs.ErrUnavailable)
	}
	pctx, cancel := qmp.Probe(ctx)
	defer cancel()
	s, err := q.QueryStatus(pctx)
	if err != nil {
		return fmt.Errorf("stratovirt of VM %s: probe QMP query-status (deadline %v): %w: %w", v.spec.ID, qmp.ProbeTimeout, err, errdefs.ErrUnavailable)
	}
	if s != "running" {
		return fmt.Errorf("stratovirt reports the guest %q: %w", s, errdefs.ErrUnavailable)
	}
	return nil
}

// ConsoleLog is the guest console log.
func (v *VM) ConsoleLog() string { return v.path(ConsoleLogName) }

// Capabilities of the StratoVirt driver.
func (v *VM) Capabilities() vm.Capabilities {
	return vm.Capabilities{ShareModes: []string{vm.ShareVirtioFS, vm.ShareBlock}, Channel: "vsock"}
}

// Wait blocks until the VMM exits or ctx is done.
func (v *VM) Wait(ctx context.Context) error { return v.proc.Load().Wait(ctx) }

// Stop quits StratoVirt over QMP, kills it after timeout, then virtiofsd.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if q := v.qmp; q != nil {
		vmm.Quit(ctx, v.proc.Load(), timeout, func(ctx context.Context) { _ = q.Quit(ctx) })
	}
	v.cleanupLocked()
	return nil
}

func (v *VM) cleanupLocked() {
	v.proc.Load().Kill()
	v.fsd.Kill()
	if v.qmp != nil {
		v.qmp.Close()
		v.qmp = nil
	}
	for _, s := range []string{QMPSocketName, FSSocketName} {
		_ = os.Remove(v.path(s))
	}
}
