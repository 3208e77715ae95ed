package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestValidateEveryKey feeds one bad value per key of the sandboxer's own
// sections over the shipped defaults (the backends' sections are checked by
// their own Config types, see cmd/internal/backends): each must be refused at start-up (Parse is what Load runs) with
// an InvalidArgument error naming the key and saying what to use.
func TestValidateEveryKey(t *testing.T) {
	tests := []struct {
		name, in string
		key, fix string
	}{
		{"unknown default isolation", "[sandboxer]\ndefault_isolation = \"gvisor\"\n", "sandboxer.default_isolation", `use "wasm", "vm" or "quark"`},
		{"empty default isolation", "[sandboxer]\ndefault_isolation = \"\"\n", "sandboxer.default_isolation", `use "wasm", "vm" or "quark"`},
		{"handler isolation unknown", "[runtime_handlers.x]\nisolation = \"docker\"\n", "runtime_handlers.x.isolation", `use "wasm", "vm" or "quark"`},
		{"handler hypervisor on wasm", "[runtime_handlers.x]\nisolation = \"wasm\"\nhypervisor = \"qemu\"\n", "runtime_handlers.x.hypervisor", `set isolation = "vm"`},
		{"empty listen", "[sandboxer]\nlisten = \"\"\n", "sandboxer.listen", "set the unix socket path"},
		{"relative listen", "[sandboxer]\nlisten = \"kuasar.sock\"\n", "sandboxer.listen", "absolute path"},
		{"listen over the socket limit", "[sandboxer]\nlisten = \"/run/" + strings.Repeat("x", 110) + ".sock\"\n", "sandboxer.listen", "shorter path"},
		{"containerd address too long", "[sandboxer]\ncontainerd_address = \"/" + strings.Repeat("c", 120) + "\"\n", "sandboxer.containerd_address", "shorter path"},
		{"containerd ttrpc address relative", "[sandboxer]\ncontainerd_ttrpc_address = \"containerd.sock.ttrpc\"\n", "sandboxer.containerd_ttrpc_address", "absolute path"},
		{"empty state dir", "[sandboxer]\nstate_dir = \"\"\n", "sandboxer.state_dir", "absolute directory"},
		{"relative state dir", "[sandboxer]\nstate_dir = \"state\"\n", "sandboxer.state_dir", "not an absolute path"},
		{"world-writable socket mode", "[sandboxer]\nsocket_mode = \"0666\"\n", "sandboxer.socket_mode", `"0600" or "0660"`},
		{"socket mode not octal", "[sandboxer]\nsocket_mode = \"rw-------\"\n", "sandboxer.socket_mode", `"0600" or "0660"`},
		{"log level", "[sandboxer]\nlog_level = \"verbose\"\n", "sandboxer.log_level", "trace, debug, info"},
		{"handler wasm engine on vm", "[runtime_handlers.x]\nisolation = \"vm\"\nwasm_engine = \"wasmedge\"\n", "runtime_handlers.x.wasm_engine", `set isolation = "wasm"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.in)
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.key) || !strings.Contains(err.Error(), tt.fix) {
				t.Fatalf("error %q, want it to name %q and the fix %q", err, tt.key, tt.fix)
			}
		})
	}
}

// TestValidateGoodValues: the shipped defaults and the values the bounds
// allow are accepted.
func TestValidateGoodValues(t *testing.T) {
	for _, in := range []string{
		"",
		"[sandboxer]\ndefault_isolation = \"vm\"\nsocket_mode = \"0660\"\n",
		"[runtime_handlers.fast]\nisolation = \"vm\"\nhypervisor = \"stratovirt\"\n[runtime_handlers.plain]\n",
		"[runtime_handlers.we]\nisolation = \"wasm\"\nwasm_engine = \"wasmedge\"\n[runtime_handlers.wz]\nwasm_engine = \"wazero\"\n",
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("refused %q: %v", in, err)
		}
	}
}

// TestValidateReportsEveryBadKey: an operator fixes a file in one go, so
// every bad key is reported, not only the first.
func TestValidateReportsEveryBadKey(t *testing.T) {
	_, err := Parse([]byte("[sandboxer]\ndefault_isolation = \"gvisor\"\nlisten = \"x.sock\"\n[runtime_handlers.w]\nisolation = \"wasm\"\nhypervisor = \"qemu\"\n"))
	for _, key := range []string{"sandboxer.default_isolation", "sandboxer.listen", "runtime_handlers.w.hypervisor"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}
