// Package backends assembles the backends built into kuasar's binaries
// from kuasar-sandboxer's configuration: kuasar-sandboxer serves them, and
// the kuasar CLI runs workloads through the same ones (in-process, no
// sockets), so a fix to a backend reaches both.
//
// It is the one place that knows every backend: sandboxer/config hands each
// backend's table over undecoded, and each backend decodes and checks its
// own section type (wasm/wasmbackend.Config, vm/vmbackend.Config,
// quark.Config).
package backends

import (
	"errors"
	"sort"

	"github.com/kuasar-go/kuasar/quark"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
)

// Config is the whole configuration: the sandboxer's own sections and each
// backend's section, decoded over its defaults and checked.
type Config struct {
	// Sandboxer is the sandboxer's part ([sandboxer], [runtime_handlers]).
	*config.Config
	// Wasm is the [wasm] section.
	Wasm wasmbackend.Config
	// VM is the [hypervisor] section.
	VM vmbackend.Config
	// Quark is the [quark] section.
	Quark quark.Config

	// flags are the override flags Apply set, by name.
	flags map[string]string
}

// Load reads the configuration at path over the embedded defaults (see
// config.Load for mustExist) and decodes every backend's section. Every
// bad key is reported at once, each naming its key and the fix.
func Load(path string, mustExist bool) (*Config, error) {
	c, err := config.Read(path, mustExist)
	if err != nil {
		return nil, err
	}
	return Decode(c)
}

// Parse is Load for TOML data, for tests and tools.
func Parse(data []byte) (*Config, error) {
	c, err := config.Decode(data, "config")
	if err != nil {
		return nil, err
	}
	return Decode(c)
}

// Decode checks the sandboxer's sections of c (config.Validate), decodes
// and checks the backends' sections, refuses tables no backend owns, and
// checks that every hypervisor a runtime handler names is one the VM
// backend drives and every Wasm engine one the wasm backend knows. Every problem is reported at once.
func Decode(c *config.Config) (*Config, error) {
	out := &Config{Config: c, Wasm: wasmbackend.DefaultConfig(), VM: vmbackend.DefaultConfig(), Quark: quark.DefaultConfig()}
	if err := c.Unowned(wasmbackend.ConfigSection, vmbackend.ConfigSection, quark.ConfigSection); err != nil {
		return nil, err
	}
	if err := c.Section(wasmbackend.ConfigSection).Decode(&out.Wasm); err != nil {
		return nil, err
	}
	if err := c.Section(vmbackend.ConfigSection).Decode(&out.VM); err != nil {
		return nil, err
	}
	if err := c.Section(quark.ConfigSection).Decode(&out.Quark); err != nil {
		return nil, err
	}
	if err := out.Check(); err != nil {
		return nil, err
	}
	return out, nil
}

// Check checks every section's values (the sandboxer's, each backend's,
// the names runtime handlers use) and reports every problem at once;
// Decode runs it, and a caller that changed values (Overrides.Apply) runs
// it again.
func (out *Config) Check() error {
	c := out.Config
	errs := []error{c.Validate(), out.Wasm.Validate(), out.VM.Validate(), out.Quark.Validate()}
	names := make([]string, 0, len(c.RuntimeHandlers))
	for n := range c.RuntimeHandlers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if hv := c.RuntimeHandlers[n].Hypervisor; hv != "" {
			errs = append(errs, vmbackend.CheckHypervisor("runtime_handlers."+n+".hypervisor", hv))
		}
		if e := c.RuntimeHandlers[n].WasmEngine; e != "" {
			errs = append(errs, wasmbackend.CheckEngine("runtime_handlers."+n+".wasm_engine", e))
		}
	}
	return errors.Join(errs...)
}
