package vmbackend

import (
	"errors"
	"slices"
	"strings"
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

// TestTemplatePoolSetting: template_pool is checked at start-up, in the
// configuration (Validate, naming the key) and by New (a caller that
// builds its own vm.Config).
func TestTemplatePoolSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		hv   string
		pool int
		ok   bool
	}{
		{"off", vm.QEMU, 0, true},
		{"default", vm.QEMU, DefaultTemplatePool, true},
		{"largest", vm.QEMU, MaxTemplatePool, true},
		{"negative", vm.QEMU, -1, false},
		{"too large", vm.QEMU, MaxTemplatePool + 1, false},
		{"not qemu", vm.CloudHypervisor, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			switch tc.hv {
			case vm.QEMU:
				c.QEMU.TemplatePool = tc.pool
			case vm.CloudHypervisor:
				c.CloudHypervisor.TemplatePool = tc.pool
			}
			err := c.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate: %v; want ok=%v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "hypervisor."+tc.hv+".template_pool")) {
				t.Fatalf("Validate: %v; want an invalid-argument error naming the key", err)
			}
			h, _ := c.Get(tc.hv)
			b, err := New(t.Context(), WithHypervisor(tc.hv, h))
			if tc.ok != (err == nil) {
				t.Fatalf("New: %v; want ok=%v", err, tc.ok)
			}
			if err == nil {
				if err := b.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "template_pool") {
				t.Fatalf("New: %v; want an invalid-argument error naming template_pool", err)
			}
		})
	}
}

// TestTemplateSetting: template = "auto" or "off" is accepted for qemu
// and cloud-hypervisor (both build and restore templates), refused for
// stratovirt (no templates) naming the key; the shipped defaults turn
// templates on for both.
func TestTemplateSetting(t *testing.T) {
	if d := DefaultConfig(); d.QEMU.Template != TemplateAuto || d.CloudHypervisor.Template != TemplateAuto {
		t.Errorf("default template settings %q (qemu), %q (cloud-hypervisor), want auto", d.QEMU.Template, d.CloudHypervisor.Template)
	}
	for _, tc := range []struct {
		hv, setting string
		ok          bool
	}{
		{vm.QEMU, TemplateAuto, true},
		{vm.CloudHypervisor, TemplateAuto, true},
		{vm.CloudHypervisor, TemplateOff, true},
		{vm.CloudHypervisor, "sometimes", false},
		{vm.StratoVirt, TemplateAuto, false},
		{vm.StratoVirt, TemplateOff, true},
	} {
		c := DefaultConfig()
		switch tc.hv {
		case vm.QEMU:
			c.QEMU.Template = tc.setting
		case vm.CloudHypervisor:
			c.CloudHypervisor.Template = tc.setting
		case vm.StratoVirt:
			c.StratoVirt.Template = tc.setting
		}
		err := c.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%s template = %q: Validate %v, want ok=%v", tc.hv, tc.setting, err, tc.ok)
		}
		if err != nil && (!errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "hypervisor."+tc.hv+".template")) {
			t.Errorf("%s template = %q: %v, want an invalid-argument error naming the key", tc.hv, tc.setting, err)
		}
	}
}
