package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestDefaultsDecode(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if c.Sandboxer.Listen != "/run/kuasar/sandboxer.sock" || c.Sandboxer.StateDir != "/run/kuasar" {
		t.Fatalf("defaults: %+v", c.Sandboxer)
	}
	if iso, hv := c.HandlerIsolation("kuasar-vm"); iso != "vm" || hv != "qemu" {
		t.Fatalf("kuasar-vm handler: %s %s", iso, hv)
	}
	if iso, _ := c.HandlerIsolation("nope"); iso != c.Sandboxer.DefaultIsolation {
		t.Fatalf("unknown handler gets %q", iso)
	}
	if c.Hypervisor.QEMU.Path == "" || c.Hypervisor.QEMU.MemoryMB == 0 {
		t.Fatalf("qemu defaults missing: %+v", c.Hypervisor.QEMU)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" means success
		check   func(*testing.T, *Config)
	}{
		{name: "override keeps other defaults", in: "[sandboxer]\nlisten = \"/tmp/x.sock\"\n", check: func(t *testing.T, c *Config) {
			if c.Sandboxer.Listen != "/tmp/x.sock" || c.Sandboxer.StateDir != "/run/kuasar" {
				t.Fatalf("got %+v", c.Sandboxer)
			}
		}},
		{name: "unknown top-level key", in: "[sandboxer]\nlisten_addr = \"x\"\n", wantErr: "sandboxer.listen_addr"},
		{name: "unknown hypervisor key", in: "[hypervisor.qemu]\nmemory = 5\n", wantErr: "hypervisor.qemu.memory"},
		{name: "unknown section", in: "[bogus]\nx = 1\n", wantErr: "bogus"},
		{name: "new runtime handler", in: "[runtime_handlers.fast]\nisolation = \"vm\"\nhypervisor = \"cloud-hypervisor\"\n", check: func(t *testing.T, c *Config) {
			if iso, hv := c.HandlerIsolation("fast"); iso != "vm" || hv != "cloud-hypervisor" {
				t.Fatalf("got %s %s", iso, hv)
			}
		}},
		{name: "bad isolation", in: "[runtime_handlers.x]\nisolation = \"docker\"\n", wantErr: "runtime_handlers.x.isolation"},
		{name: "world-writable socket refused", in: "[sandboxer]\nsocket_mode = \"0666\"\n", wantErr: "socket_mode"},
		{name: "0660 allowed", in: "[sandboxer]\nsocket_mode = \"0660\"\n", check: func(t *testing.T, c *Config) {
			if m, _ := c.SocketFileMode(); m != 0o660 {
				t.Fatalf("mode %o", m)
			}
		}},
		{name: "memory and fd defaults", in: "", check: func(t *testing.T, c *Config) {
			if n, err := c.Wasm.MemoryLimitBytes(); n != 512<<20 || err != nil || c.Wasm.DefaultOpenFileLimit != 1024 || c.Sandboxer.FdReserve != 256 {
				t.Errorf("defaults: memory %d (%v), open files %d, fd reserve %d", n, err, c.Wasm.DefaultOpenFileLimit, c.Sandboxer.FdReserve)
			}
		}},
		{name: "decimal memory limit", in: "[wasm]\ndefault_memory_limit = \"100M\"\n", check: func(t *testing.T, c *Config) {
			if n, _ := c.Wasm.MemoryLimitBytes(); n != 100e6 {
				t.Errorf("100M = %d bytes", n)
			}
		}},
		{name: "memory limit not a size", in: "[wasm]\ndefault_memory_limit = \"lots\"\n", wantErr: "wasm.default_memory_limit"},
		{name: "memory limit over wasm32", in: "[wasm]\ndefault_memory_limit = \"5Gi\"\n", wantErr: "at most 4Gi"},
		{name: "memory limit zero", in: "[wasm]\ndefault_memory_limit = \"0\"\n", wantErr: "wasm.default_memory_limit"},
		{name: "open file limit too low", in: "[wasm]\ndefault_open_file_limit = 2\n", wantErr: "default_open_file_limit"},
		{name: "fd reserve too low", in: "[sandboxer]\nfd_reserve = 0\n", wantErr: "fd_reserve"},
		{name: "bad log level", in: "[sandboxer]\nlog_level = \"loud\"\n", wantErr: "log_level"},
		{name: "syntax error", in: "[sandboxer\n", wantErr: "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("error %v is not InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "none.toml")
	if _, err := Load(p, true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("explicit missing file: %v, want NotFound", err)
	}
	c, err := Load(p, false)
	if err != nil || c.Sandboxer.Listen == "" {
		t.Fatalf("implicit missing file should give defaults: %v", err)
	}
	if err := os.WriteFile(p, []byte("[wasm]\nengine = \"wazero\"\ncache = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, true); err == nil || !strings.Contains(err.Error(), "wasm.cache") || !strings.Contains(err.Error(), p) {
		t.Fatalf("unknown key in file: %v", err)
	}
}

func TestHypervisorsGet(t *testing.T) {
	c, _ := Default()
	if _, err := c.Hypervisor.Get("firecracker"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("unknown hypervisor: %v", err)
	}
	h, err := c.Hypervisor.Get("stratovirt")
	if err != nil || h.Path == "" {
		t.Fatalf("stratovirt: %+v %v", h, err)
	}
}
