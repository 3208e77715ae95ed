package qemu_test

import (
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/vmm"
)

// TestJailSpec checks what a confined QEMU is given per rootfs mode and
// accelerator: the files it needs and nothing writable beyond its state
// directory and (9p only) the share; /dev/kvm only under KVM; the
// capability set of the mode. TestVMMConfined (vm/vmbackend) checks the
// running process.
func TestJailSpec(t *testing.T) {
	dir := t.TempDir()
	state, shared, img := filepath.Join(dir, "vm"), filepath.Join(dir, "shared"), filepath.Join(dir, "rootfs.erofs")
	for _, tc := range []struct {
		mode, accel string
		disks       []vm.Disk
		shareRW     bool
		caps        []uintptr
		devices     []string
	}{
		{vm.Share9P, qemu.AccelTCG, nil, true, []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}, nil},
		{vm.Share9P, qemu.AccelKVM, nil, true, []uintptr{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_FSETID}, []string{"/dev/kvm"}},
		{vm.ShareBlock, qemu.AccelTCG, []vm.Disk{{ID: "rootfs0", Path: img, ReadOnly: true}}, false, []uintptr{unix.CAP_DAC_OVERRIDE}, nil},
	} {
		v, err := qemu.New(vm.Spec{ID: "j", StateDir: state, SharedDir: shared, Disks: tc.disks,
			Config: vm.Config{Path: "/bin/true", Kernel: "/bin/sh", Initramfs: "/bin/ls", RootfsMode: tc.mode}})
		if err != nil {
			t.Fatal(err)
		}
		j := v.Jail(tc.accel)
		if j.Root != filepath.Join(state, qemu.JailDirName) || !j.Proc {
			t.Errorf("%s: root %s proc %v", tc.mode, j.Root, j.Proc)
		}
		binds := map[string]vmm.Bind{}
		for _, b := range j.Binds {
			binds[b.Path] = b
		}
		want := map[string]vmm.Bind{
			"/usr": {Path: "/usr"}, "/bin/sh": {Path: "/bin/sh"}, "/bin/ls": {Path: "/bin/ls"},
			state:  {Path: state, Writable: true},
			shared: {Path: shared, Writable: tc.shareRW, Recursive: true},
		}
		for _, d := range tc.disks {
			want[d.Path] = vmm.Bind{Path: d.Path}
		}
		for p, w := range want {
			if binds[p] != w {
				t.Errorf("%s/%s: bind %s = %+v, want %+v", tc.mode, tc.accel, p, binds[p], w)
			}
		}
		for p, b := range binds {
			if _, ok := want[p]; !ok && b.Writable {
				t.Errorf("%s: extra writable bind %+v", tc.mode, b)
			}
		}
		if !reflect.DeepEqual(j.Caps, tc.caps) || !reflect.DeepEqual(j.Caps, qemu.KeptCapabilities(tc.mode)) {
			t.Errorf("%s: caps %v, want %v", tc.mode, j.Caps, tc.caps)
		}
		if !reflect.DeepEqual(j.Devices, tc.devices) {
			t.Errorf("%s/%s: devices %v, want %v", tc.mode, tc.accel, j.Devices, tc.devices)
		}
	}
}
