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
	if iso, hv := c.HandlerIsolation("kuasar"); iso != "wasm" || hv != "" {
		t.Fatalf("kuasar handler: %s %q (a handler naming no hypervisor leaves it to the VM backend)", iso, hv)
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
		{name: "unknown handler key", in: "[runtime_handlers.x]\nisolation = \"vm\"\nhypervsor = \"qemu\"\n", wantErr: "runtime_handlers.x.hypervsor"},
		{name: "top-level key that is no table", in: "listen = \"/x.sock\"\n", wantErr: "unknown key(s) listen"},
		{name: "sandboxer section of the wrong type", in: "sandboxer = 5\n", wantErr: "[sandboxer]"},
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
		{name: "fd default", in: "", check: func(t *testing.T, c *Config) {
			if c.Sandboxer.FdReserve != 256 {
				t.Errorf("fd reserve %d", c.Sandboxer.FdReserve)
			}
		}},
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
	if err := os.WriteFile(p, []byte("[sandboxer]\nlisten = \"/x.sock\"\nstate = \"x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, true); err == nil || !strings.Contains(err.Error(), "sandboxer.state") || !strings.Contains(err.Error(), p) {
		t.Fatalf("unknown key in file: %v", err)
	}
}

// section is a backend's section type, as a backend declares it.
type section struct {
	Path  string `toml:"path"`
	Count int    `toml:"count"`
	Inner struct {
		Flag bool `toml:"flag"`
	} `toml:"inner"`
}

// TestSection: a backend's table is decoded by the backend over its own
// defaults and then layer by layer (the embedded defaults, then the file),
// a key the file leaves out keeps the earlier value, and a key the
// backend's type lacks is refused naming the key and the file; Unowned
// names tables no backend claimed.
func TestSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	write := func(data string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[demo]\ncount = 3\n[demo.inner]\nflag = true\n")
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	s := section{Path: "/default", Count: 1}
	if err := c.Section("demo").Decode(&s); err != nil {
		t.Fatal(err)
	}
	if s.Path != "/default" || s.Count != 3 || !s.Inner.Flag {
		t.Errorf("decoded %+v, want the default path, count 3 and flag set", s)
	}
	// The embedded defaults hold the built-in backends' tables.
	if err := c.Unowned("demo", "wasm", "hypervisor", "quark"); err != nil {
		t.Errorf("owned table reported: %v", err)
	}
	if err := c.Unowned("wasm", "hypervisor", "quark"); err == nil || !strings.Contains(err.Error(), "demo") || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unowned table: %v, want an InvalidArgument error naming demo", err)
	}
	var none section
	if err := c.Section("absent").Decode(&none); err != nil || none != (section{}) {
		t.Errorf("absent section: %+v %v", none, err)
	}

	write("[demo]\ncount = 3\n[demo.inner]\nflg = true\n")
	if c, err = Load(p, true); err != nil {
		t.Fatal(err)
	}
	err = c.Section("demo").Decode(&section{})
	if err == nil || !strings.Contains(err.Error(), "demo.inner.flg") || !strings.Contains(err.Error(), p) || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown key: %v, want an InvalidArgument error naming demo.inner.flg and %s", err, p)
	}
	write("[demo]\ncount = \"three\"\n")
	if c, err = Load(p, true); err != nil {
		t.Fatal(err)
	}
	if err = c.Section("demo").Decode(&section{}); err == nil || !strings.Contains(err.Error(), "count") || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad value: %v, want an InvalidArgument error naming count", err)
	}
}
