// Package qemu drives QEMU micro-VMs: "-M microvm" by default (q35 as an
// option), KVM when it works and TCG otherwise, the guest console in a log
// file, QMP on a unix socket, the agent on a virtio-serial port whose unix
// socket the host listens on, the sandbox's shared directory over
// virtio-9p, and disk images (rootfs_mode "block") on virtio-blk.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/kuasar-go/kuasar/internal/unixsock"
	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qmp"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// File names inside the VM's state directory.
const (
	// ConsoleLogName is the guest console log.
	ConsoleLogName = "console.log"
	// VMMLogName holds QEMU's own stdout and stderr.
	VMMLogName = "vmm.log"
	// QMPSocketName is the QMP socket.
	QMPSocketName = "qmp.sock"
	// AgentSocketName is the agent channel's socket (host listens).
	AgentSocketName = "agent.sock"
)

// Machine types.
const (
	// MachineMicroVM is QEMU's minimal virtio-mmio machine (default).
	MachineMicroVM = "microvm"
	// MachineQ35 is the PCI machine, for kernels without virtio-mmio support.
	MachineQ35 = "q35"
)

// VM is one QEMU process and its guest.
type VM struct {
	spec  vm.Spec
	accel string

	mu       sync.Mutex
	proc     atomic.Pointer[vmm.Process] // stored under mu, loaded without it
	qmp      *QMP
	agentL   *net.UnixListener
	stopped  bool
	startErr error
	uid      uint32 // confined QEMU's uid (see launch)
	tpl      *tplMode
}

var _ vm.Hypervisor = (*VM)(nil)

// New returns a VM for spec; nothing runs until Start.
func New(spec vm.Spec) (*VM, error) {
	if err := spec.Config.Validate(vm.QEMU); err != nil {
		return nil, err
	}
	switch spec.Config.Machine {
	case "", MachineMicroVM, MachineQ35:
	default:
		return nil, fmt.Errorf("machine %q in [hypervisor.qemu]: use microvm or q35: %w", spec.Config.Machine, errdefs.ErrInvalidArgument)
	}
	switch spec.Config.RootfsMode {
	case "", vm.Share9P, vm.ShareBlock:
	default:
		return nil, fmt.Errorf("rootfs_mode %q in [hypervisor.qemu] is not implemented by the QEMU driver yet: use 9p (or block for `kuasar run`): %w", spec.Config.RootfsMode, errdefs.ErrNotImplemented)
	}
	for i, d := range spec.Disks {
		if d.ID == "" || strings.Trim(d.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return nil, fmt.Errorf("disk %d: id %q must be letters, digits, '-' or '_': %w", i, d.ID, errdefs.ErrInvalidArgument)
		}
		if d.Path == "" {
			return nil, fmt.Errorf("disk %s has no image path: %w", d.ID, errdefs.ErrInvalidArgument)
		}
	}
	if spec.StateDir == "" {
		return nil, fmt.Errorf("vm spec without a state directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := checkExtraArgs(spec.Config.ExtraArgs); err != nil {
		return nil, err
	}
	return &VM{spec: spec}, nil
}

func (v *VM) path(name string) string { return filepath.Join(v.spec.StateDir, name) }

// Name is the -name QEMU runs with; it identifies the process on re-attach.
func (v *VM) Name() string { return "kuasar-" + v.spec.ID }

// Accel is the accelerator the VM was started with ("" before Start).
func (v *VM) Accel() string { return v.accel }

// Args returns QEMU's command line (without the binary) for accel.
func (v *VM) Args(accel string) []string {
	c := v.spec.Config
	machine := c.Machine
	if machine == "" {
		machine = MachineMicroVM
	}
	micro := machine == MachineMicroVM
	vcpus, mem := v.spec.VCPUs, v.spec.MemoryMB
	if vcpus == 0 || mem == 0 {
		vcpus, mem = vm.Sizes(c, vm.Resources{})
	}
	args := []string{
		"-name", v.Name(),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-sandbox", SandboxOption,
		"-accel", accel,
		"-smp", strconv.Itoa(int(vcpus)),
		"-m", strconv.FormatUint(mem, 10) + "M",
		"-kernel", c.Kernel,
		"-initrd", c.Initramfs,
		"-append", v.Cmdline(),
		"-chardev", "file,id=console,path=" + v.ConsoleLog(),
		"-serial", "chardev:console",
		"-qmp", "unix:" + v.path(QMPSocketName) + ",server=on,wait=off",
		"-chardev", "socket,id=agent,path=" + v.path(AgentSocketName) + ",reconnect=1",
	}
	if accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	serialDev, p9Dev, blkDev := "virtio-serial-pci", "virtio-9p-pci", "virtio-blk-pci"
	m := machine
	if c.MachineOptions != "" {
		m += "," + c.MachineOptions
	}
	args = append(args, "-M", m)
	if micro {
		serialDev, p9Dev, blkDev = "virtio-serial-device", "virtio-9p-device", "virtio-blk-device"
	}
	args = append(args,
		"-device", serialDev,
		"-device", "virtserialport,chardev=agent,name="+vm.AgentSerialName,
	)
	if v.spec.SharedDir != "" {
		fsdev := "local,id=shared,path=" + optEscape(v.spec.SharedDir) + ",security_model=none"
		if c.RootfsMode == vm.ShareBlock {
			// Only bundles travel through the share: the guest reads them.
			fsdev += ",readonly=on"
		}
		args = append(args,
			"-fsdev", fsdev,
			"-device", p9Dev+",fsdev=shared,mount_tag="+vm.ShareTag,
		)
	}
	for _, d := range v.spec.Disks {
		ro := "off"
		if d.ReadOnly {
			ro = "on"
		}
		args = append(args,
			"-drive", "file="+optEscape(d.Path)+",if=none,id="+d.ID+",format=raw,readonly="+ro,
			"-device", blkDev+",drive="+d.ID,
		)
	}
	args = append(args, v.templateArgs(mem)...)
	return append(args, c.ExtraArgs...)
}

// optEscape escapes a value inside a QEMU option list (a comma is doubled).
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Cmdline is the guest kernel command line.
func (v *VM) Cmdline() string {
	c := v.spec.Config
	p := []string{"console=ttyS0", "quiet", "panic=-1", "8250.nr_uarts=1",
		"cryptomgr.notests", "mitigations=off", "audit=0", "no_timer_check",
		"random.trust_cpu=on", "kuasar.channel=serial"}
	if c.Machine == "" || c.Machine == MachineMicroVM {
		p = append(p, "pci=off")
		if khz := TSCKHz(); khz > 0 {
			p = append(p, "tsc_early_khz="+strconv.FormatUint(khz, 10))
		}
	}
	if c.Debug {
		p = append(p, "kuasar.debug=1")
	}
	return strings.Join(append(p, c.KernelParams...), " ")
}

// Start launches QEMU and connects QMP. The agent socket is listened on
// before QEMU starts, so QEMU (the client) never races it.
func (v *VM) Start(ctx context.Context) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vmm.Prepare(v.proc.Load(), v.spec.ID, v.spec.StateDir); err != nil {
		return err
	}
	accel := v.spec.Config.Accel
	if accel == "" || accel == "auto" {
		accel, _ = DetectAccel(ctx)
	}
	v.accel = accel
	l, err := unixsock.Listen(v.path(AgentSocketName), 0o600)
	if err != nil {
		return fmt.Errorf("listen on agent socket: %w", err)
	}
	v.agentL = l
	defer func() {
		if retErr != nil {
			v.cleanupLocked()
		}
	}()
	args := v.Args(accel)
	log.G(ctx).WithField("sandbox", v.spec.ID).WithField("accel", accel).Debugf("vm: starting %s %s", v.spec.Config.Path, strings.Join(args, " "))
	p, err := v.launch(ctx, accel, args)
	if err != nil {
		return err
	}
	v.proc.Store(p)
	hint := ""
	if accel == AccelKVM {
		hint = " (accel kvm: if KVM is nested or restricted here, set accel = \"tcg\" in [hypervisor.qemu])"
	}
	q, err := qmp.Connect(ctx, p, "qemu", v.path(QMPSocketName), hint, 10*time.Millisecond, DialQMP)
	if err != nil {
		return err
	}
	v.qmp = q
	return nil
}

// Attach re-attaches to a QEMU that still runs with pid (after a sandboxer
// restart): it checks the process is this VM's QEMU, listens on the agent
// socket again (QEMU reconnects within a second) and reconnects QMP.
func (v *VM) Attach(ctx context.Context, pid int) (retErr error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, err := vmm.Attach(pid, "-name\x00"+v.Name()+"\x00", v.path(VMMLogName))
	if err != nil {
		return err
	}
	v.proc.Store(p)
	l, err := unixsock.Listen(v.path(AgentSocketName), 0o600)
	if err != nil {
		return fmt.Errorf("listen on agent socket: %w", err)
	}
	v.agentL = l
	// A confined QEMU reconnects under its own uid (see launch).
	if uid := vmm.ProcessUID(pid); uid > 0 {
		if err := os.Lchown(v.path(AgentSocketName), int(uid), 0); err != nil {
			l.Close()
			return fmt.Errorf("hand the agent socket to the VMM's uid %d: %w", uid, err)
		}
		v.uid = uint32(uid)
	}
	pctx, cancel := qmp.Probe(ctx)
	q, err := DialQMP(pctx, v.path(QMPSocketName))
	cancel()
	if err != nil {
		l.Close()
		v.agentL = nil
		return fmt.Errorf("qemu of VM %s (pid %d): probe QMP connect: %w", v.spec.ID, pid, err)
	}
	v.qmp = q
	return nil
}

// Detach lets go of QEMU without stopping it: QMP and the agent socket are
// closed (QEMU keeps running and reconnects the agent channel once a new
// listener appears), as when the sandboxer restarts. Attach takes it back.
func (v *VM) Detach() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.disconnectLocked()
	v.proc.Store(nil)
}

// disconnectLocked closes QMP and the agent socket's listener.
func (v *VM) disconnectLocked() {
	if v.qmp != nil {
		v.qmp.Close()
		v.qmp = nil
	}
	if v.agentL != nil {
		v.agentL.Close()
		v.agentL = nil
	}
}

// Pid is QEMU's process id (0 before Start).
func (v *VM) Pid() int { return v.proc.Load().Pid() }

// DialAgent accepts QEMU's connection to the agent socket; that
// connection carries the guest agent's virtio-serial port.
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	v.mu.Lock()
	l, p := v.agentL, v.proc.Load()
	v.mu.Unlock()
	if l == nil || p == nil {
		return nil, fmt.Errorf("vm %s is not running: %w", v.spec.ID, errdefs.ErrFailedPrecondition)
	}
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	if dl, ok := ctx.Deadline(); ok {
		_ = l.SetDeadline(dl)
	}
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		_ = l.SetDeadline(time.Time{})
		if r.err != nil {
			return nil, fmt.Errorf("accept agent channel: %w", r.err)
		}
		return r.c, nil
	case <-p.Done():
		_ = l.SetDeadline(time.Now())
		return nil, fmt.Errorf("qemu exited: %w", errdefs.ErrUnavailable)
	case <-ctx.Done():
		_ = l.SetDeadline(time.Now())
		return nil, ctx.Err()
	}
}

// Health reports an error when the guest cannot make progress: QEMU has
// exited, its monitor does not answer query-status within
// qmp.ProbeTimeout (QEMU is stopped or wedged), or QMP reports
// internal-error (e.g. KVM emulation failure) or guest-panicked. QEMU does
// not exit in those states by itself. Errors name the VM and the probe.
func (v *VM) Health(ctx context.Context) error {
	v.mu.Lock()
	p, q := v.proc.Load(), v.qmp
	v.mu.Unlock()
	if p == nil || p.Exited() {
		return fmt.Errorf("qemu of VM %s is not running: %w", v.spec.ID, errdefs.ErrUnavailable)
	}
	if q == nil {
		return nil
	}
	pctx, cancel := qmp.Probe(ctx)
	defer cancel()
	s, err := q.QueryStatus(pctx)
	if err != nil {
		if ctx.Err() == nil && pctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("qemu of VM %s (pid %d) is %w: probe QMP query-status on %s did not answer within %v: %w",
				v.spec.ID, p.Pid(), errdefs.ErrUnavailable, v.path(QMPSocketName), qmp.ProbeTimeout, err)
		}
		return fmt.Errorf("qemu of VM %s (pid %d): probe QMP query-status: %w", v.spec.ID, p.Pid(), err)
	}
	switch s.Status {
	case "internal-error", "guest-panicked", "shutdown":
		return fmt.Errorf("qemu of VM %s: probe QMP query-status reports the guest in state %q (accel %s; set accel = \"tcg\" in [hypervisor.qemu] if KVM is nested): %w", v.spec.ID, s.Status, v.accel, errdefs.ErrUnavailable)
	}
	return nil
}

// ConsoleLog is the guest console log file.
func (v *VM) ConsoleLog() string { return v.path(ConsoleLogName) }

// Capabilities of the QEMU driver.
func (v *VM) Capabilities() vm.Capabilities {
	return vm.Capabilities{ShareModes: []string{vm.Share9P, vm.ShareBlock}, Channel: "serial", Hotplug: false}
}

// Wait blocks until QEMU exits or ctx is done.
func (v *VM) Wait(ctx context.Context) error { return v.proc.Load().Wait(ctx) }

// Exited reports whether QEMU has exited (or never started).
func (v *VM) Exited() bool { return v.proc.Load().Exited() }

// Stop asks QEMU to quit over QMP and kills it after timeout; it then
// removes the sockets. It is idempotent.
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
	v.disconnectLocked()
	for _, s := range []string{QMPSocketName, AgentSocketName} {
		if err := os.Remove(v.path(s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.L.WithError(err).Warn("vm: removing socket")
		}
	}
	v.stopped = true
}
