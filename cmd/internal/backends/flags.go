package backends

import (
	"flag"
	"fmt"
	"strings"
)

// Overrides are the command-line flags of kuasar-sandboxer that move a
// path (or the log level) the configuration file also sets: a flag given
// on the command line wins over the file, which wins over the embedded
// defaults. A flag left out keeps the file's value, so "" can be given
// on purpose (--wasm-cache-dir "" keeps compiled modules in memory only).
type Overrides struct {
	fs *flag.FlagSet
	// values maps a flag's name to where its value goes.
	values map[string]*string
}

// overrideFlags lists each flag, its configuration key and its help.
var overrideFlags = []struct{ flag, key, help string }{
	{"listen", "sandboxer.listen", "unix socket for the Sandbox API"},
	{"state-dir", "sandboxer.state_dir", "state directory: sandbox records and task sockets (keep it on tmpfs)"},
	{"log-level", "sandboxer.log_level", "trace, debug, info, warn or error"},
	{"containerd-address", "sandboxer.containerd_address", "containerd's gRPC socket (image metadata, Wasm modules)"},
	{"containerd-ttrpc-address", "sandboxer.containerd_ttrpc_address", "containerd's ttrpc socket (task events)"},
	{"wasm-cache-dir", "wasm.cache_dir", "compiled-module cache of the Wasm engine; \"\" keeps it in memory"},
	{"vm-kernel", "hypervisor.*.kernel", "guest kernel of every hypervisor"},
	{"vm-initramfs", "hypervisor.*.initramfs", "guest initramfs of every hypervisor"},
}

// RegisterOverrides defines the override flags on fs.
func RegisterOverrides(fs *flag.FlagSet) *Overrides {
	o := &Overrides{fs: fs, values: map[string]*string{}}
	for _, f := range overrideFlags {
		o.values[f.flag] = fs.String(f.flag, "", fmt.Sprintf("%s (overrides %s)", f.help, f.key))
	}
	return o
}

// Apply sets the value of every override flag given on the command line
// into c, and records it so that Settings reports the flag as the source.
// Call it after fs.Parse and before c's values are used; run Validate
// again afterwards (a flag's value is checked as the file's would be).
func (o *Overrides) Apply(c *Config) {
	o.fs.Visit(func(f *flag.Flag) {
		v, ok := o.values[f.Name]
		if !ok {
			return
		}
		switch f.Name {
		case "listen":
			c.Sandboxer.Listen = *v
		case "state-dir":
			c.Sandboxer.StateDir = *v
		case "log-level":
			c.Sandboxer.LogLevel = *v
		case "containerd-address":
			c.Sandboxer.ContainerdAddress = *v
		case "containerd-ttrpc-address":
			c.Sandboxer.ContainerdTTRPCAddress = *v
		case "wasm-cache-dir":
			c.Wasm.CacheDir = *v
		case "vm-kernel":
			c.VM.QEMU.Kernel, c.VM.CloudHypervisor.Kernel, c.VM.StratoVirt.Kernel = *v, *v, *v
		case "vm-initramfs":
			c.VM.QEMU.Initramfs, c.VM.CloudHypervisor.Initramfs, c.VM.StratoVirt.Initramfs = *v, *v, *v
		}
		if c.flags == nil {
			c.flags = map[string]string{}
		}
		c.flags[f.Name] = *v
	})
}

// Setting is one effective value and where it comes from.
type Setting struct {
	// Key is the configuration key (hypervisor.NAME.kernel for the
	// default hypervisor's).
	Key string
	// Value is the effective value.
	Value string
	// Source is "--FLAG", the configuration file's path, or "embedded
	// defaults".
	Source string
}

// Settings returns the effective value and source of every setting an
// override flag can move (the paths a user may need to change), in the
// flags' order.
func (c *Config) Settings() []Setting {
	hv, _ := c.VM.Get(c.VM.Default)
	values := map[string]string{
		"listen": c.Sandboxer.Listen, "state-dir": c.Sandboxer.StateDir, "log-level": c.Sandboxer.LogLevel,
		"containerd-address": c.Sandboxer.ContainerdAddress, "containerd-ttrpc-address": c.Sandboxer.ContainerdTTRPCAddress,
		"wasm-cache-dir": c.Wasm.CacheDir, "vm-kernel": hv.Kernel, "vm-initramfs": hv.Initramfs,
	}
	out := make([]Setting, 0, len(overrideFlags))
	for _, f := range overrideFlags {
		key := strings.ReplaceAll(f.key, "*", c.VM.Default)
		s := Setting{Key: key, Value: values[f.flag]}
		if _, ok := c.flags[f.flag]; ok {
			s.Source = "--" + f.flag
		} else {
			s.Source = c.Config.Source(strings.Split(key, ".")...)
		}
		out = append(out, s)
	}
	return out
}
