package virtiofs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/vm"
)

func TestCheckAndUsed(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode, fsd string
		shared    string
		used      bool
		err       error
		mention   string
		noKernel  bool
	}{
		{"default mode", "", "/usr/libexec/virtiofsd", "/s", true, nil, "", false},
		{"virtiofs without a shared dir", vm.ShareVirtioFS, "", "", false, nil, "", false},
		{"virtiofs without virtiofsd", vm.ShareVirtioFS, "", "/s", true, errdefs.ErrFailedPrecondition, `set "virtiofsd" in [hypervisor.stratovirt]`, false},
		{"block", vm.ShareBlock, "", "/s", false, nil, "", false},
		{"no kernel", vm.ShareBlock, "", "/s", false, errdefs.ErrFailedPrecondition, `set "kernel" in [hypervisor.stratovirt]`, true},
		{"9p", vm.Share9P, "", "/s", false, errdefs.ErrInvalidArgument, `"9p" in [hypervisor.stratovirt]: StratoVirt has no 9p`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := vm.Spec{SharedDir: tc.shared, Config: vm.Config{Path: "/bin/true", Kernel: "/bin/true", Initramfs: "/bin/true", RootfsMode: tc.mode, VirtioFSD: tc.fsd}}
			if tc.noKernel {
				spec.Config.Kernel = ""
			}
			err := Check(spec, vm.StratoVirt, "StratoVirt")
			if tc.err == nil && err != nil || tc.err != nil && (!errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.mention)) {
				t.Errorf("Check: %v, want %v mentioning %q", err, tc.err, tc.mention)
			}
			if got := Used(spec); got != tc.used {
				t.Errorf("Used %v, want %v", got, tc.used)
			}
		})
	}
}

// TestStart runs a stand-in virtiofsd (a shell script logging its
// arguments) and checks the command line, and that a missing binary
// names the config key.
func TestStart(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "virtiofsd")
	os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\"\n"), 0o755)
	spec := vm.Spec{SharedDir: "/shared", Config: vm.Config{VirtioFSD: fake}}
	p, err := Start(spec, vm.CloudHypervisor, "/run/fs.sock", filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		p.Kill()
		t.Fatal("stand-in virtiofsd did not exit")
	}
	if got, want := p.Tail(200), "--socket-path=/run/fs.sock --shared-dir=/shared --cache=never --sandbox=namespace --seccomp=kill"; got != want {
		t.Errorf("virtiofsd args %q, want %q", got, want)
	}
	spec.Config.VirtioFSD = filepath.Join(dir, "missing")
	if p, err := Start(vm.Spec{Config: spec.Config}, vm.CloudHypervisor, "/run/fs.sock", filepath.Join(dir, "log2")); p != nil || err != nil {
		t.Errorf("Start without a shared directory: %v %v, want nothing started", p, err)
	}
	if _, err := Start(spec, vm.CloudHypervisor, "/run/fs.sock", filepath.Join(dir, "log2")); err == nil || !strings.Contains(err.Error(), `check "virtiofsd" in [hypervisor.cloud-hypervisor]`) {
		t.Errorf("missing virtiofsd: %v, want an error naming the key", err)
	}
}
