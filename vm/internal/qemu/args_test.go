package qemu_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
	"github.com/kuasar-go/kuasar/vm/internal/qemu"
	"github.com/kuasar-go/kuasar/vm/internal/qmp"
)

func TestArgs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		machine    string
		disks      []vm.Disk
		want, nots []string
	}{
		{"", nil, []string{"-M microvm", "-device virtio-serial-device", "-device virtio-9p-device,fsdev=shared,mount_tag=kuasar", "pci=off", "tsc_early_khz=", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-accel tcg", "-m 512M", "-smp 2"}, []string{"-drive", "virtio-blk"}},
		{"q35", nil, []string{"-M q35", "-device virtio-serial-pci", "-device virtio-9p-pci"}, []string{"pci=off", "tsc_early_khz"}},
		// rootfs_mode "block": the image on virtio-blk, the 9p share kept for bundles;
		// a comma in the path is doubled so it cannot inject drive options.
		{"", []vm.Disk{{ID: "rootfs0", Path: "/img/a,b.erofs", ReadOnly: true}, {ID: "data_1", Path: "/img/d"}},
			[]string{"-drive file=/img/a,,b.erofs,if=none,id=rootfs0,format=raw,readonly=on -device virtio-blk-device,drive=rootfs0 -drive file=/img/d,if=none,id=data_1,format=raw,readonly=off -device virtio-blk-device,drive=data_1", "-device virtio-9p-device"}, nil},
		{"q35", []vm.Disk{{ID: "rootfs0", Path: "/img/r", ReadOnly: true}}, []string{"-device virtio-blk-pci,drive=rootfs0"}, []string{"virtio-blk-device"}},
	} {
		v, err := qemu.New(vm.Spec{ID: "a", StateDir: dir, SharedDir: filepath.Join(dir, "shared"), VCPUs: 2, MemoryMB: 512, Disks: tc.disks,
			Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", Machine: tc.machine, KernelParams: []string{"foo=1"}, RootfsMode: map[bool]string{true: vm.ShareBlock}[tc.disks != nil]}})
		if err != nil {
			t.Fatal(err)
		}
		args := strings.Join(v.Args(qemu.AccelTCG), " ")
		share := "-fsdev local,id=shared,path=" + filepath.Join(dir, "shared") + ",security_model=none"
		if tc.disks != nil { // block mode: the share only carries bundles, read-only
			share += ",readonly=on"
		}
		for _, w := range append(tc.want, share+" ", "-sandbox "+qemu.SandboxOption, "-device virtserialport,chardev=agent,name=kuasar.agent", "-qmp unix:"+filepath.Join(dir, "qmp.sock")+",server=on,wait=off", "foo=1", "kuasar.channel=serial", "console=ttyS0") {
			if !strings.Contains(args, w) {
				t.Errorf("%s: args lack %q:\n%s", tc.machine, w, args)
			}
		}
		for _, n := range tc.nots {
			if strings.Contains(args, n) {
				t.Errorf("%s: args contain %q", tc.machine, n)
			}
		}
	}
	if qemu.SandboxOption != "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" {
		t.Errorf("-sandbox %s: every deny group must be on", qemu.SandboxOption)
	}
	// extra_args cannot undo the confinement.
	for _, a := range []string{"-sandbox", "-runas", "-chroot", "-daemonize"} {
		_, err := qemu.New(vm.Spec{ID: "a", StateDir: dir, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", ExtraArgs: []string{a, "off"}}})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), a) {
			t.Errorf("extra_args %s: %v, want InvalidArgument naming it", a, err)
		}
	}
	if _, err := qemu.New(vm.Spec{ID: "a", StateDir: dir, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", Machine: "pc-i440fx"}}); err == nil {
		t.Error("unknown machine accepted")
	}
	for _, d := range []vm.Disk{{ID: "a,b", Path: "/x"}, {ID: "", Path: "/x"}, {ID: "r"}} {
		if _, err := qemu.New(vm.Spec{ID: "a", StateDir: dir, Disks: []vm.Disk{d}, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true"}}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("disk %+v: err %v, want InvalidArgument", d, err)
		}
	}
}

// TestQMPSkipsEventsAndSeesInternalError talks to a fake QMP peer that
// interleaves events and reports the state a nested-KVM guest ends in.
func TestQMPSkipsEventsAndSeesInternalError(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintln(c, `{"QMP":{"version":{"qemu":{"micro":0,"minor":2,"major":7}},"capabilities":["oob"]}}`)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			req := string(buf[:n])
			fmt.Fprintln(c, `{"timestamp":{"seconds":1,"microseconds":1},"event":"RTC_CHANGE","data":{"offset":0}}`)
			switch {
			case strings.Contains(req, "qmp_capabilities"):
				fmt.Fprintln(c, `{"return":{}}`)
			case strings.Contains(req, "query-status"):
				fmt.Fprintln(c, `{"return":{"status":"internal-error","singlestep":false,"running":false}}`)
			default:
				fmt.Fprintln(c, `{"error":{"class":"CommandNotFound","desc":"nope"}}`)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := qemu.DialQMP(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	s, err := q.QueryStatus(ctx)
	if err != nil || s.Status != "internal-error" || s.Running {
		t.Fatalf("status %+v %v", s, err)
	}
	var qe *qmp.Error
	if _, err := q.Execute(ctx, "bogus", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("bogus command: %v, want a CommandNotFound reply", err)
	}
}

func TestDetectAccelLogsAReason(t *testing.T) {
	a, reason := qemu.DetectAccel(context.Background())
	if (a != qemu.AccelKVM && a != qemu.AccelTCG) || reason == "" {
		t.Fatalf("accel %q reason %q", a, reason)
	}
	t.Logf("accel %s: %s", a, reason)
}
