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
	f.Add([]byte("[hypervisor.qemu]\nvcpus = 0\nmemory_mb = -1\nkernel_params = [\"quiet\", \"console=ttyS0\"]\n"))
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

// normalize makes empty and nil lists compare equal: TOML cannot tell them
// apart and the configuration does not either.
func normalize(c *Config) *Config {
	n := *c
	n.Hypervisor = c.Hypervisor
	for _, h := range []*Hypervisor{&n.Hypervisor.QEMU, &n.Hypervisor.CloudHypervisor, &n.Hypervisor.StratoVirt} {
		if len(h.KernelParams) == 0 {
			h.KernelParams = nil
		}
		if len(h.ExtraArgs) == 0 {
			h.ExtraArgs = nil
		}
	}
	return &n
}
