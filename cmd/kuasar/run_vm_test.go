package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/images"
)

// TestRunLinuxImageInVM boots a real micro-VM (QEMU, TCG here) from the
// default configuration's kernel and initramfs (`make guest`) and runs a
// busybox image in it with `kuasar run`, isolation chosen automatically from
// the image being a Linux one.
func TestRunLinuxImageInVM(t *testing.T) {
	archive := busyboxVMArchive(t, "docker.io/library/busybox-vm:test", ocispec.ImageConfig{Cmd: []string{"echo default"}}, "sh", "uname", "echo", "cat", "hostname")
	var host unix.Utsname
	if err := unix.Uname(&host); err != nil {
		t.Fatal(err)
	}
	hostRelease := unix.ByteSliceToString(host.Release[:])

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"default command", []string{"run", archive}, 0, "default\n"},
		{"args replace cmd, entrypoint kept", []string{"run", "--isolation", "vm", archive, "--", "uname -r; echo hi from $(hostname); exit 3"}, 3, "hi from kuasar\n"},
		{"stdin reaches the guest", []string{"run", archive, "--", "cat"}, 0, "piped\n"},
		// Killed through the Task API's Kill after the deadline (counted
		// from the container's start, not the boot): 128+SIGKILL.
		{"timeout kills the guest", []string{"run", "--timeout", "2s", archive, "--", "echo up; sleep 100"}, 137, "up\n"},
	}
	state := t.TempDir()
	t.Cleanup(func() {
		// The runs restore from a VM template kept in the state
		// directory, its memory on /dev/shm: remove both.
		var out, errs bytes.Buffer
		env := &cliEnv{stdout: &out, stderr: &errs, stateDir: state}
		if code := runCLI(context.Background(), env, []string{"vm-templates"}); code != 0 || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("vm-templates: exit %d, listed %q (one template wanted), stderr %s", code, out.String(), errs.String())
		}
		out.Reset()
		if code := runCLI(context.Background(), env, []string{"vm-templates", "rm"}); code != 0 {
			t.Errorf("vm-templates rm: exit %d: %s", code, errs.String())
		}
		if runCLI(context.Background(), env, []string{"vm-templates"}); out.Len() != 0 {
			t.Errorf("templates left after rm: %q", out.String())
		}
	})
	// The template is built ahead (and the runs restore from that one:
	// the clean-up finds exactly one).
	var tout, terr bytes.Buffer
	if code := runCLI(context.Background(), &cliEnv{stdout: &tout, stderr: &terr, stateDir: state}, []string{"vm-templates", "build"}); code != 0 || strings.Count(tout.String(), "\n") != 1 {
		t.Fatalf("vm-templates build: exit %d, printed %q, stderr %s", code, tout.String(), terr.String())
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := &cliEnv{stdin: strings.NewReader("piped\n"), stdout: &stdout, stderr: &stderr, stateDir: state}
			code := runCLI(context.Background(), env, tt.args)
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if tt.wantCode == 137 && !strings.Contains(stderr.String(), "stopped after --timeout 2s") {
				t.Errorf("stderr %q does not say the --timeout stopped it", stderr.String())
			}
			if !strings.HasSuffix(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q, want it to end with %q (stderr: %s)", stdout.String(), tt.wantOut, stderr.String())
			}
			if strings.Contains(tt.args[len(tt.args)-1], "uname -r") {
				guestRelease, _, _ := strings.Cut(stdout.String(), "\n")
				if guestRelease == "" || guestRelease == hostRelease {
					t.Errorf("guest kernel release %q should be the guest kernel's, not empty or the host's %q", guestRelease, hostRelease)
				}
			}
		})
	}
	// Nothing of the runs is left behind.
	left, _ := filepath.Glob(filepath.Join(state, "run", "*"))
	if len(left) != 0 {
		t.Errorf("run state left behind: %v", left)
	}
}

func TestRunVMRefusesWhatItCannotHonour(t *testing.T) {
	var stderr bytes.Buffer
	env := &cliEnv{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, stateDir: t.TempDir()}
	wasmFile := filepath.Join(t.TempDir(), "m.wasm")
	if err := os.WriteFile(wasmFile, emptyCommand, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--isolation", "quark", wasmFile}, "has no filesystem layers to run in Quark"},
		{[]string{"run", "--isolation", "vm", wasmFile}, "run it with --isolation wasm"},
	}
	for _, tt := range tests {
		stderr.Reset()
		if code := runCLI(context.Background(), env, tt.args); code != exitKuasarError {
			t.Errorf("%v: exit code %d, want %d", tt.args, code, exitKuasarError)
		}
		if !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: stderr %q lacks %q", tt.args, stderr.String(), tt.want)
		}
	}
}

// busyboxVMArchive skips unless VMs can boot here (-short, root, the
// default VM configuration usable), then writes a busybox Linux image with
// the applets cmds and entrypoint `/bin/sh -c` as an OCI archive named ref,
// and returns its path.
func busyboxVMArchive(t *testing.T, ref string, cfg ocispec.ImageConfig, cmds ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, QEMU)")
	}
	c, err := backends.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VM.QEMU.Validate("qemu"); err != nil {
		t.Fatalf("the default VM configuration is not usable: %v (run make deps and make guest)", err)
	}
	files, err := images.BusyboxFiles("/bin/busybox", cmds...)
	if err != nil {
		t.Fatalf("%v (run make deps)", err)
	}
	cfg.Entrypoint = []string{"/bin/sh", "-c"}
	img, err := images.BuildLinuxImage(context.Background(), files, cfg, ocispec.Platform{})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if err := img.WriteArchiveFile(archive, ref); err != nil {
		t.Fatal(err)
	}
	return archive
}
