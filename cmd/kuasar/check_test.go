package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	initrd := filepath.Join(dir, "initramfs.img")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	qemuSection := func(kernelPath string) string {
		return "[hypervisor.qemu]\npath = \"/bin/sh\"\nkernel = \"" + kernelPath + "\"\ninitramfs = \"" + initrd + "\"\n" +
			"[sandboxer]\ncontainerd_address = \"" + filepath.Join(dir, "no-containerd.sock") + "\"\nlisten = \"" + filepath.Join(dir, "no-sandboxer.sock") + "\"\n"
	}
	tests := []struct {
		name     string
		config   string // "" = no file: embedded defaults
		wantCode int
		want     []string // lines that must appear
	}{
		{
			name:     "files present",
			config:   qemuSection(kernel),
			wantCode: 0,
			want:     []string{"ok    path resolution", "ok    wasm engine", "ok    vm qemu", "warn  containerd socket", "warn  vm cloud-hypervisor", "ok    vm templates", "auto for qemu, cloud-hypervisor: VMs of the default sizes are restored from a template; 0 in "},
		},
		{
			name:     "templates off",
			config:   strings.Replace(qemuSection(kernel), "[hypervisor.qemu]\n", "[hypervisor.cloud-hypervisor]\ntemplate = \"off\"\n[hypervisor.qemu]\ntemplate = \"off\"\n", 1),
			wantCode: 0,
			want:     []string{"ok    vm templates", "off ([hypervisor.qemu] and [hypervisor.cloud-hypervisor] template)"},
		},
		{
			name:     "templates off for qemu only",
			config:   strings.Replace(qemuSection(kernel), "[hypervisor.qemu]\n", "[hypervisor.qemu]\ntemplate = \"off\"\n", 1),
			wantCode: 0,
			want:     []string{"ok    vm templates", "auto for cloud-hypervisor: VMs of the default sizes are restored from a template (off for qemu)"},
		},
		{
			name:     "missing kernel names the key",
			config:   qemuSection(filepath.Join(dir, "absent-vmlinux")),
			wantCode: 1,
			want:     []string{"FAIL  vm qemu", `set "kernel" in [hypervisor.qemu]`},
		},
		{
			name:     "unknown key",
			config:   "[sandboxer]\nlisten_typo = \"x\"\n",
			wantCode: 1,
			want:     []string{"FAIL  config", "sandboxer.listen_typo"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "config.toml")
			if tt.config != "" {
				if err := os.WriteFile(cfg, []byte(tt.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			env := &cliEnv{stdout: &out, stderr: &out, stateDir: t.TempDir()}
			code := runCLI(context.Background(), env, []string{"check", "--config", cfg})
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tt.wantCode, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
