package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"

	"github.com/containerd/errdefs"
)

// maxSocketPath is the longest path a unix socket address holds.
const maxSocketPath = 107

// validateKeys checks every key whose value decodes but cannot work, and
// returns all the problems at once (errors.Join), each naming its key and
// the fix, each of kind ErrInvalidArgument. It checks values, not the
// host: whether the files it names exist is for the backend that uses them
// (and `kuasar check`), so a host without QEMU still serves Wasm pods.
// The backends' sections are checked by the backends (Section).
func (c *Config) validateKeys() error {
	var errs []error
	bad := func(key string, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %w", key, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument))
	}
	sb := c.Sandboxer
	socket := func(key, v string, required bool) {
		switch {
		case v == "" && required:
			bad("sandboxer."+key, "is empty: set the unix socket path")
		case v == "":
		case !filepath.IsAbs(v):
			bad("sandboxer."+key, "%q is not an absolute path: use one such as /run/kuasar/sandboxer.sock", v)
		case len(v) > maxSocketPath:
			bad("sandboxer."+key, "%q is %d bytes, over the %d a unix socket path holds: use a shorter path", v, len(v), maxSocketPath)
		}
	}
	socket("listen", sb.Listen, true)
	socket("containerd_address", sb.ContainerdAddress, false)
	socket("containerd_ttrpc_address", sb.ContainerdTTRPCAddress, false)
	absDir := func(key, v string, required bool) {
		switch {
		case v == "" && required:
			bad(key, "is empty: set an absolute directory")
		case v != "" && !filepath.IsAbs(v):
			bad(key, "%q is not an absolute path: the daemon's working directory is not part of its configuration", v)
		}
	}
	absDir("sandboxer.state_dir", sb.StateDir, true)
	isolation("sandboxer.default_isolation", sb.DefaultIsolation, false, bad)

	names := make([]string, 0, len(c.RuntimeHandlers))
	for n := range c.RuntimeHandlers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := c.RuntimeHandlers[n]
		key := "runtime_handlers." + n
		if n == "" {
			bad("runtime_handlers", "a handler has an empty name: name it as its RuntimeClass handler")
		}
		isolation(key+".isolation", h.Isolation, true, bad)
		// Whether the name is a Wasm engine is the wasm backend's to say
		// (its CheckEngine).
		if h.WasmEngine != "" && h.Isolation == "vm" {
			bad(key+".wasm_engine", "is set, but isolation is \"vm\", which runs no Wasm engine: remove it or set isolation = \"wasm\"")
		}
		// Whether the name is a hypervisor is the VM backend's to say
		// (its section's CheckHypervisor).
		if h.Hypervisor != "" && h.Isolation == "wasm" {
			bad(key+".hypervisor", "is set, but isolation is \"wasm\", which runs no VM: remove it or set isolation = \"vm\"")
		}
	}
	return errors.Join(errs...)
}

// isolation checks a sandbox kind: "wasm", "vm" or "quark" ("" only where
// the key may be left unset).
func isolation(key, v string, emptyOK bool, bad func(string, string, ...any)) {
	switch v {
	case "wasm", "vm", "quark":
	case "":
		if !emptyOK {
			bad(key, "is empty: use \"wasm\", \"vm\" or \"quark\"")
		}
	default:
		bad(key, "%q is not a sandbox kind: use \"wasm\", \"vm\" or \"quark\"", v)
	}
}
