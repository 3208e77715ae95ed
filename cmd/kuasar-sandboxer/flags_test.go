package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	kbackends "github.com/kuasar-go/kuasar/cmd/internal/backends"
)

// TestFlagsOverFileOverDefaults checks every path flag: absent from both
// the file and the command line, a setting keeps the embedded default;
// set in the file, the file's value; given as a flag, the flag's value
// over the file's. Each setting also reports its source, as `kuasar
// check` and the sandboxer's start-up log print it.
func TestFlagsOverFileOverDefaults(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(file, []byte(`[sandboxer]
listen = "/file/listen.sock"
state_dir = "/file/state"
log_level = "warn"
containerd_address = "/file/c.sock"
containerd_ttrpc_address = "/file/c.sock.ttrpc"
[wasm]
cache_dir = "/file/wasm-cache"
[hypervisor.qemu]
kernel = "/file/vmlinux"
initramfs = "/file/initramfs.img"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, flag              string
		dflt, fileVal, flagVal string
	}{
		{"sandboxer.listen", "listen", "/run/kuasar/sandboxer.sock", "/file/listen.sock", "/flag/listen.sock"},
		{"sandboxer.state_dir", "state-dir", "/run/kuasar", "/file/state", "/flag/state"},
		{"sandboxer.log_level", "log-level", "info", "warn", "debug"},
		{"sandboxer.containerd_address", "containerd-address", "/run/containerd/containerd.sock", "/file/c.sock", "/flag/c.sock"},
		{"sandboxer.containerd_ttrpc_address", "containerd-ttrpc-address", "/run/containerd/containerd.sock.ttrpc", "/file/c.sock.ttrpc", "/flag/c.sock.ttrpc"},
		{"wasm.cache_dir", "wasm-cache-dir", "/var/lib/kuasar/wasm-cache", "/file/wasm-cache", ""},
		{"hypervisor.qemu.kernel", "vm-kernel", "/var/lib/kuasar/vmlinux", "/file/vmlinux", "/flag/vmlinux"},
		{"hypervisor.qemu.initramfs", "vm-initramfs", "/var/lib/kuasar/initramfs.img", "/file/initramfs.img", "/flag/initramfs.img"},
	}
	settings := func(t *testing.T, args ...string) map[string]kbackends.Setting {
		t.Helper()
		fs := flag.NewFlagSet("kuasar-sandboxer", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfgPath := fs.String("config", filepath.Join(dir, "absent.toml"), "")
		o := kbackends.RegisterOverrides(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadConfig(fs, *cfgPath, o)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]kbackends.Setting{}
		for _, s := range cfg.Settings() {
			m[s.Key] = s
		}
		return m
	}
	defaults := settings(t)
	fromFile := settings(t, "--config", file)
	var flagArgs []string
	for _, tc := range tests {
		flagArgs = append(flagArgs, "--"+tc.flag+"="+tc.flagVal)
	}
	fromFlags := settings(t, append([]string{"--config", file}, flagArgs...)...)
	if len(defaults) != len(tests) {
		t.Errorf("Settings has %d keys, the table %d: test every override flag", len(defaults), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.flag, func(t *testing.T) {
			if s := defaults[tc.key]; s.Value != tc.dflt || s.Source != "embedded defaults" {
				t.Errorf("no file, no flag: %+v; want %q from the embedded defaults", s, tc.dflt)
			}
			if s := fromFile[tc.key]; s.Value != tc.fileVal || s.Source != file {
				t.Errorf("file only: %+v; want %q from %s", s, tc.fileVal, file)
			}
			if s := fromFlags[tc.key]; s.Value != tc.flagVal || s.Source != "--"+tc.flag {
				t.Errorf("file and flag: %+v; want %q from --%s", s, tc.flagVal, tc.flag)
			}
		})
	}
}

// TestFlagValuesAreChecked: a flag's value is refused as the same value in
// the file would be, with an error naming the key.
func TestFlagValuesAreChecked(t *testing.T) {
	for _, tc := range []struct{ flag, value, key string }{
		{"wasm-cache-dir", "relative/cache", "cache_dir"},
		{"log-level", "loud", "sandboxer.log_level"},
		{"containerd-address", "relative.sock", "containerd_address"},
		{"state-dir", "relative", "state_dir"},
	} {
		empty := filepath.Join(t.TempDir(), "empty.toml")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := run([]string{"--config", empty, "--" + tc.flag, tc.value})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("--%s %q: %v; want InvalidArgument naming %s", tc.flag, tc.value, err, tc.key)
		}
	}
}
