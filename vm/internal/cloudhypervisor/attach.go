package cloudhypervisor

import (
	"context"
	"fmt"

	"github.com/kuasar-go/kuasar/vm/internal/virtiofs"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// Attach re-attaches to a running Cloud Hypervisor with pid after a
// sandboxer restart, as the QEMU driver does: the process must be this
// VM's (its recorded pid and start time, and its --api-socket path on its
// command line), its virtiofsd (when the share is virtio-fs) must still
// run as recorded, and the API must answer vmm.ping. The agent is reached
// again through the hybrid vsock socket in the state directory.
//
// Verified against Cloud Hypervisor's specification only (its OpenAPI
// description; it cannot be run on the machine this was written on): the
// tests re-execute the test binary as a fake Cloud Hypervisor.
func (v *VM) Attach(ctx context.Context, pid int) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, err := vmm.Attach(pid, v.path(APISocketName), v.path(VMMLogName))
	if err != nil {
		return err
	}
	var fsd *vmm.Process
	if virtiofs.Used(v.spec) {
		if fsd, err = vmm.Reattach(v.path(VirtioFSDLogName)); err != nil {
			return fmt.Errorf("cloud-hypervisor of VM %s (pid %d) runs but its virtiofsd does not: the guest lost its shared directory: %w", v.spec.ID, pid, err)
		}
	}
	c := NewClient(v.path(APISocketName))
	pctx, cancel := context.WithTimeout(ctx, HealthProbeTimeout)
	_, err = c.Ping(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("cloud-hypervisor of VM %s (pid %d): probe API vmm.ping: %w", v.spec.ID, pid, err)
	}
	v.proc.Store(p)
	v.fsd, v.client = fsd, c
	return nil
}

// Detach lets go of Cloud Hypervisor and virtiofsd without stopping them,
// as a sandboxer restart does; Attach takes them back.
func (v *VM) Detach() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.proc.Store(nil)
	v.fsd, v.client = nil, nil
}
