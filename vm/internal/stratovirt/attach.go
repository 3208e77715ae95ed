package stratovirt

import (
	"context"
	"fmt"
	"time"

	"github.com/kuasar-go/kuasar/vm/internal/qmp"
	"github.com/kuasar-go/kuasar/vm/internal/virtiofs"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// Attach re-attaches to a StratoVirt that still runs with pid after a
// sandboxer restart, as the QEMU driver does: the process must be this
// VM's (its recorded pid and start time, and "-name kuasar-<id>" on its
// command line), its virtiofsd (when the share is virtio-fs) must still
// run as recorded, and QMP must answer on the same socket. StratoVirt
// serves one QMP client at a time and accepts the next once the previous
// one is gone (docs/qmp.md), which is the case after the sandboxer that
// held it died. The agent is reached again over vsock at the VM's CID,
// derived from the sandbox ID.
//
// Verified against StratoVirt's specification only (it cannot be run on
// the machine this was written on): the tests re-execute the test binary
// as a fake StratoVirt and virtiofsd.
func (v *VM) Attach(ctx context.Context, pid int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, err := vmm.Attach(pid, "-name\x00kuasar-"+v.spec.ID+"\x00", v.path(VMMLogName))
	if err != nil {
		return err
	}
	var fsd *vmm.Process
	if virtiofs.Used(v.spec) {
		if fsd, err = vmm.Reattach(v.path(VirtioFSDLogName)); err != nil {
			return fmt.Errorf("stratovirt of VM %s (pid %d) runs but its virtiofsd does not: the guest lost its shared directory: %w", v.spec.ID, pid, err)
		}
	}
	// One QMP client at a time: the old one may not be noticed gone
	// yet, so the connect is retried within the probe's deadline.
	pctx, cancel := qmp.Probe(ctx)
	defer cancel()
	var q *QMP
	err = vmm.Poll(pctx, p, 20*time.Millisecond, func() (err error) {
		q, err = DialQMP(pctx, v.path(QMPSocketName))
		return err
	}, func(exited bool, last error) error {
		return fmt.Errorf("stratovirt of VM %s (pid %d): probe QMP connect (exited %v): %w", v.spec.ID, pid, exited, last)
	})
	if err != nil {
		return err
	}
	v.proc.Store(p)
	v.fsd, v.qmp = fsd, q
	return nil
}

// Detach lets go of StratoVirt and virtiofsd without stopping them (QMP is
// closed), as a sandboxer restart does; Attach takes them back.
func (v *VM) Detach() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.qmp != nil {
		v.qmp.Close()
		v.qmp = nil
	}
	v.proc.Store(nil)
	v.fsd = nil
}
