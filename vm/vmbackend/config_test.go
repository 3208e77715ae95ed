package vmbackend

import (
	"errors"
	"slices"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/cloudhypervisor"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/stratovirt"
)

// TestHypervisorCapsMatchDrivers keeps the rootfs modes validation accepts
// in step with what each driver says it implements.
func TestHypervisorCapsMatchDrivers(t *testing.T) {
	cfg := vm.Config{Path: "/bin/sh", Kernel: "/bin/sh", Initramfs: "/bin/sh", VirtioFSD: "/bin/sh"}
	spec := vm.Spec{ID: "caps", StateDir: t.TempDir(), Config: cfg}
	q, err := qemu.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloudhypervisor.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, err := stratovirt.New(spec)
	if err != nil {
		t.Fatal(err)
	}
	for name, caps := range map[string]vm.Capabilities{vm.QEMU: q.Capabilities(), vm.CloudHypervisor: c.Capabilities(), vm.StratoVirt: s.Capabilities()} {
		got := slices.Clone(caps.ShareModes)
		slices.Sort(got)
		want := slices.Clone(hypervisorCaps[name].rootfsModes)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: driver implements rootfs modes %v, validation accepts %v", name, caps.ShareModes, hypervisorCaps[name].rootfsModes)
		}
	}
}

func TestConfigGet(t *testing.T) {
	c := DefaultConfig()
	if _, err := c.Get("firecracker"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("unknown hypervisor: %v", err)
	}
	h, err := c.Get(vm.StratoVirt)
	if err != nil || h.Path != "/usr/bin/stratovirt" {
		t.Fatalf("stratovirt: %+v %v", h, err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	if accel, _ := DetectAccel(t.Context()); accel != AccelKVM && accel != AccelTCG {
		t.Fatalf("DetectAccel = %q, want %q or %q", accel, AccelKVM, AccelTCG)
	}
}
