// Package config reads kuasar-sandboxer's TOML configuration.
//
// The shipped defaults (configs/config.toml, embedded) are decoded first and
// the user's file is decoded over them, so a file only needs the keys it
// changes. A key the structs below do not know is an error naming the key:
// a typo must never silently keep a default.
//
// The hypervisor sections are plain data for the VM backend; the sandboxer
// itself only routes on [runtime_handlers] and [sandboxer].default_isolation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/internal/bytesize"
	"github.com/kuasar-go/kuasar/vm"
)

// DefaultPath is where kuasar-sandboxer looks for its configuration.
const DefaultPath = "/etc/kuasar/config.toml"

// Config is the whole kuasar-sandboxer configuration.
type Config struct {
	// Sandboxer is the daemon's own settings.
	Sandboxer Sandboxer `toml:"sandboxer"`
	// Wasm configures the in-process Wasm backend.
	Wasm Wasm `toml:"wasm"`
	// RuntimeHandlers maps a CRI runtime handler name to its default isolation.
	RuntimeHandlers map[string]RuntimeHandler `toml:"runtime_handlers"`
	// Hypervisor configures the VM backend's hypervisors.
	Hypervisor Hypervisors `toml:"hypervisor"`
}

// Sandboxer is the [sandboxer] section.
type Sandboxer struct {
	// Listen is the unix socket the Sandbox API is served on.
	Listen string `toml:"listen"`
	// StateDir holds sandbox records and per-sandbox Task API sockets.
	StateDir string `toml:"state_dir"`
	// LogLevel is trace, debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// SocketMode is the octal file mode of created sockets: "0600" or "0660".
	SocketMode string `toml:"socket_mode"`
	// ContainerdAddress is containerd's gRPC socket (image metadata lookups).
	ContainerdAddress string `toml:"containerd_address"`
	// ContainerdTTRPCAddress is containerd's ttrpc socket (task events).
	ContainerdTTRPCAddress string `toml:"containerd_ttrpc_address"`
	// DefaultIsolation is used when nothing else names a sandbox kind.
	DefaultIsolation string `toml:"default_isolation"`
	// FdReserve is how many file descriptors of the sandboxer's
	// RLIMIT_NOFILE guests can never take, kept for its own sockets and
	// files: Wasm guests together get the rest, then ENFILE.
	FdReserve int `toml:"fd_reserve"`
}

// Wasm is the [wasm] section.
type Wasm struct {
	// Engine names the Wasm engine ("wazero").
	Engine string `toml:"engine"`
	// CacheDir is the compiled-module cache; "" keeps it in memory.
	CacheDir string `toml:"cache_dir"`
	// DefaultMemoryLimit caps a container's linear memory when neither the
	// container nor its pod has a memory limit: a size such as "512Mi"
	// (Ki/Mi/Gi binary, K/M/G decimal), at most 4Gi (all wasm32 can use).
	// See MemoryLimitBytes.
	DefaultMemoryLimit string `toml:"default_memory_limit"`
	// DefaultOpenFileLimit caps the files a container holds open (stdio
	// and mounts included) when its spec has no RLIMIT_NOFILE; past it
	// the guest gets EMFILE.
	DefaultOpenFileLimit int `toml:"default_open_file_limit"`
}

// wasm32MaxMemory is all the memory a wasm32 guest can address.
const wasm32MaxMemory = 4 << 30

// MemoryLimitBytes parses DefaultMemoryLimit.
func (w Wasm) MemoryLimitBytes() (uint64, error) {
	n, err := bytesize.Parse(w.DefaultMemoryLimit)
	if err != nil {
		return 0, fmt.Errorf("wasm.default_memory_limit: %w", err)
	}
	if n > wasm32MaxMemory {
		return 0, fmt.Errorf("wasm.default_memory_limit %q is more than a wasm32 guest can address: use at most 4Gi: %w", w.DefaultMemoryLimit, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// RuntimeHandler is one [runtime_handlers.NAME] section.
type RuntimeHandler struct {
	// Isolation is the handler's default sandbox kind ("wasm", "vm").
	Isolation string `toml:"isolation"`
	// Hypervisor is the handler's default hypervisor for "vm" sandboxes.
	Hypervisor string `toml:"hypervisor"`
}

// Hypervisors is the [hypervisor] section.
type Hypervisors struct {
	// Default names the hypervisor used when pod and image name none.
	Default string `toml:"default"`
	// QEMU is [hypervisor.qemu].
	QEMU Hypervisor `toml:"qemu"`
	// CloudHypervisor is [hypervisor.cloud-hypervisor].
	CloudHypervisor Hypervisor `toml:"cloud-hypervisor"`
	// StratoVirt is [hypervisor.stratovirt].
	StratoVirt Hypervisor `toml:"stratovirt"`
}

// Get returns the settings of the hypervisor called name, or an
// ErrInvalidArgument error listing the names it knows.
func (h Hypervisors) Get(name string) (Hypervisor, error) {
	switch name {
	case "qemu":
		return h.QEMU, nil
	case "cloud-hypervisor":
		return h.CloudHypervisor, nil
	case "stratovirt":
		return h.StratoVirt, nil
	}
	return Hypervisor{}, fmt.Errorf("unknown hypervisor %q: use qemu, cloud-hypervisor or stratovirt: %w", name, errdefs.ErrInvalidArgument)
}

// Hypervisor is one [hypervisor.NAME] section. It is the VM backend's own
// configuration type, so that a key added there is a key of this file too,
// with no mapping to keep in step.
type Hypervisor = vm.Config

// Default returns the embedded defaults (configs/config.toml).
func Default() (*Config, error) {
	var c Config
	if err := decode(&c, configs.SandboxerDefault, "embedded defaults"); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads the configuration at path over the embedded defaults. When path
// does not exist, Load returns the defaults if mustExist is false and an
// ErrNotFound error otherwise (a path the user named explicitly must exist).
func Load(path string, mustExist bool) (*Config, error) {
	c, err := Default()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if mustExist {
			return nil, fmt.Errorf("config file %s does not exist: create it (see configs/config.toml) or omit --config: %w", path, errdefs.ErrNotFound)
		}
		return c, c.Validate()
	}
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if err := decode(c, b, path); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Parse decodes data (TOML) over the embedded defaults, for tests and tools.
func Parse(data []byte) (*Config, error) {
	c, err := Default()
	if err != nil {
		return nil, err
	}
	if err := decode(c, data, "config"); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

func decode(c *Config, data []byte, name string) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return fmt.Errorf("parse %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return fmt.Errorf("%s: unknown key(s) %s: remove or correct them (configs/config.toml lists every key): %w",
			name, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Validate checks values that decode fine but cannot work (see also
// validateKeys in validate.go, which reports every bad key at once).
func (c *Config) Validate() error {
	if err := c.validateKeys(); err != nil {
		return err
	}
	if _, err := c.SocketFileMode(); err != nil {
		return err
	}
	for _, iso := range []struct{ where, v string }{{"sandboxer.default_isolation", c.Sandboxer.DefaultIsolation}} {
		if err := checkIsolation(iso.where, iso.v, false); err != nil {
			return err
		}
	}
	for name, h := range c.RuntimeHandlers {
		if err := checkIsolation("runtime_handlers."+name+".isolation", h.Isolation, true); err != nil {
			return err
		}
	}
	if _, err := c.Wasm.MemoryLimitBytes(); err != nil {
		return err
	}
	if c.Wasm.DefaultOpenFileLimit < 8 {
		return fmt.Errorf("wasm.default_open_file_limit = %d: allow at least 8 (stdio, mounts and a few files; default 1024): %w", c.Wasm.DefaultOpenFileLimit, errdefs.ErrInvalidArgument)
	}
	if c.Sandboxer.FdReserve < 64 {
		return fmt.Errorf("sandboxer.fd_reserve = %d: keep at least 64 file descriptors for the sandboxer itself (default 256): %w", c.Sandboxer.FdReserve, errdefs.ErrInvalidArgument)
	}
	switch c.Sandboxer.LogLevel {
	case "", "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		return fmt.Errorf("sandboxer.log_level %q: use trace, debug, info, warn or error: %w", c.Sandboxer.LogLevel, errdefs.ErrInvalidArgument)
	}
	return nil
}

func checkIsolation(where, v string, emptyOK bool) error {
	switch v {
	case "wasm", "vm":
		return nil
	case "":
		if emptyOK {
			return nil
		}
	}
	return fmt.Errorf("%s = %q: use \"wasm\" or \"vm\": %w", where, v, errdefs.ErrInvalidArgument)
}

// SocketFileMode parses sandboxer.socket_mode; only 0600 and 0660 are allowed
// because a Task API socket lets its user run code in every sandbox.
func (c *Config) SocketFileMode() (os.FileMode, error) {
	s := c.Sandboxer.SocketMode
	if s == "" {
		return 0o600, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || (m != 0o600 && m != 0o660) {
		return 0, fmt.Errorf("sandboxer.socket_mode %q: use \"0600\" or \"0660\": %w", s, errdefs.ErrInvalidArgument)
	}
	return os.FileMode(m), nil
}

// HandlerIsolation returns the isolation and hypervisor configured for the
// runtime handler called name, or the defaults when it is not configured.
func (c *Config) HandlerIsolation(name string) (isolation, hypervisor string) {
	isolation, hypervisor = c.Sandboxer.DefaultIsolation, c.Hypervisor.Default
	if h, ok := c.RuntimeHandlers[name]; ok {
		if h.Isolation != "" {
			isolation = h.Isolation
		}
		if h.Hypervisor != "" {
			hypervisor = h.Hypervisor
		}
	}
	return isolation, hypervisor
}
