package config

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"
)

// FuzzParse feeds hostile TOML to the configuration parser and validation
// that kuasar-sandboxer and the kuasar CLI run at start-up. Properties: no
// panic; a refusal is an InvalidArgument error; an accepted configuration,
// encoded back to TOML and parsed again, is the same configuration and is
// accepted again (nothing the parser keeps is lost or reinterpreted).
func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("[sandboxer]\ndefault_isolation = \"vm\"\nsocket_mode = \"0660\"\n[runtime_handlers.fast]\nisolation = \"vm\"\nhypervisor = \"stratovirt\"\n"))
	f.Add([]byte("[runtime_handlers.q]\nisolation = \"vm\"\n[hypervisor.qemu]\nvcpus = 0\n"))
	f.Add([]byte("[sandboxer]\ndefault_isolation = \"quark\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("refusal %v is not InvalidArgument", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("encode an accepted config: %v", err)
		}
		again, err := Parse(buf.Bytes())
		if err != nil {
			t.Fatalf("accepted config, re-encoded, is refused: %v\n%s", err, buf.Bytes())
		}
		if !reflect.DeepEqual(normalize(c), normalize(again)) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", c, again, buf.Bytes())
		}
	})
}

// normalize makes empty and nil maps compare equal and drops the
// backends' undecoded tables (their own tests round-trip them): TOML
// cannot tell empty from absent and the configuration does not either.
func normalize(c *Config) *Config {
	n := Config{Sandboxer: c.Sandboxer, RuntimeHandlers: c.RuntimeHandlers}
	if len(n.RuntimeHandlers) == 0 {
		n.RuntimeHandlers = nil
	}
	return &n
}
