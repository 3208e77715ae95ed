// Package config reads kuasar-sandboxer's TOML configuration.
//
// The shipped defaults (configs/config.toml, embedded) are decoded first and
// the user's file is decoded over them, so a file only needs the keys it
// changes. A key nobody reads is an error naming the key: a typo must never
// silently keep a default.
//
// The sandboxer itself reads [sandboxer] and [runtime_handlers] only. Every
// other top-level table belongs to a backend and is kept undecoded (a
// toml.Primitive per layer, as containerd does for its plugins): the backend
// decodes it into its own type with Section(name).Decode and checks it
// itself, so this package imports no backend. Unowned reports a table no
// backend claimed.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/configs"
)

// DefaultPath is where kuasar-sandboxer looks for its configuration.
const DefaultPath = "/etc/kuasar/config.toml"

// Config is the whole kuasar-sandboxer configuration: the sandboxer's own
// sections decoded, the backends' sections kept for them.
type Config struct {
	// Sandboxer is the daemon's own settings.
	Sandboxer Sandboxer `toml:"sandboxer"`
	// RuntimeHandlers maps a CRI runtime handler name to its default isolation.
	RuntimeHandlers map[string]RuntimeHandler `toml:"runtime_handlers"`

	// layers are the decoded documents, defaults first.
	layers []*layer
}

// layer is one TOML document: its metadata (which tracks decoded keys)
// and its backend tables, undecoded.
type layer struct {
	name     string
	md       *toml.MetaData
	sections map[string]toml.Primitive
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

// RuntimeHandler is one [runtime_handlers.NAME] section.
type RuntimeHandler struct {
	// Isolation is the handler's default sandbox kind ("wasm", "vm",
	// "quark").
	Isolation string `toml:"isolation"`
	// Hypervisor is the handler's default hypervisor for "vm" sandboxes;
	// the VM backend checks the name ("" lets it use its default).
	Hypervisor string `toml:"hypervisor"`
	// WasmEngine is the handler's Wasm engine ("wazero", "wasmedge") for
	// "wasm" sandboxes whose pod has no kuasar.io/wasm-engine annotation.
	WasmEngine string `toml:"wasm_engine"`
}

// Default returns the embedded defaults (configs/config.toml).
func Default() (*Config, error) {
	var c Config
	if err := c.decode(configs.SandboxerDefault, "embedded defaults"); err != nil {
		return nil, err
	}
	return &c, nil
}

// Load reads the configuration at path over the embedded defaults and
// checks the sandboxer's sections (Validate). When path does not exist,
// Load returns the defaults if mustExist is false and an ErrNotFound error
// otherwise (a path the user named explicitly must exist).
func Load(path string, mustExist bool) (*Config, error) {
	c, err := Read(path, mustExist)
	if err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Read is Load without Validate, for a caller that reports the sandboxer's
// and the backends' problems together.
func Read(path string, mustExist bool) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if mustExist {
			return nil, fmt.Errorf("config file %s does not exist: create it (see configs/config.toml) or omit --config: %w", path, errdefs.ErrNotFound)
		}
		return Default()
	}
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	return Decode(b, path)
}

// Parse decodes data (TOML) over the embedded defaults and validates it,
// for tests and tools.
func Parse(data []byte) (*Config, error) {
	c, err := Decode(data, "config")
	if err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Decode decodes data (TOML, called name in errors) over the embedded
// defaults without Validate.
func Decode(data []byte, name string) (*Config, error) {
	c, err := Default()
	if err != nil {
		return nil, err
	}
	if err := c.decode(data, name); err != nil {
		return nil, err
	}
	return c, nil
}

// ownSections are the top-level tables the sandboxer decodes itself.
var ownSections = map[string]bool{"sandboxer": true, "runtime_handlers": true}

// decode decodes one document over c: the sandboxer's sections into c,
// every other table kept as a layer of its backend's section.
func (c *Config) decode(data []byte, name string) error {
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		return fmt.Errorf("parse %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	l := &layer{name: name, md: &md, sections: map[string]toml.Primitive{}}
	// Tables, also those only defined through a sub-table ([a.b] alone).
	tables := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) > 1 || md.Type(k...) == "Hash" {
			tables[k[0]] = true
		}
	}
	var unknown []string
	for k, p := range top {
		switch {
		case k == "sandboxer":
			err = md.PrimitiveDecode(p, &c.Sandboxer)
		case k == "runtime_handlers":
			err = md.PrimitiveDecode(p, &c.RuntimeHandlers)
		case tables[k]:
			l.sections[k] = p
		default:
			unknown = append(unknown, k)
		}
		if err != nil {
			return fmt.Errorf("%s: [%s]: %w: %w", name, k, err, errdefs.ErrInvalidArgument)
		}
	}
	for _, k := range md.Undecoded() {
		if ownSections[k[0]] {
			unknown = append(unknown, k.String())
		}
	}
	if err := unknownKeys(name, unknown); err != nil {
		return err
	}
	c.layers = append(c.layers, l)
	return nil
}

// unknownKeys is the error for keys nobody reads, or nil when there are none.
func unknownKeys(name string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	return fmt.Errorf("%s: unknown key(s) %s: remove or correct them (configs/config.toml lists every key): %w",
		name, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
}

// Section is a backend's top-level table, undecoded: the layers (defaults,
// then the user's file) in which it appears.
type Section struct {
	name   string
	layers []*layer
}

// Section returns the table called name (such as "wasm" or "hypervisor")
// for its backend to decode.
func (c *Config) Section(name string) Section {
	s := Section{name: name}
	for _, l := range c.layers {
		if _, ok := l.sections[name]; ok {
			s.layers = append(s.layers, l)
		}
	}
	return s
}

// Decode decodes the section into v, a pointer to the backend's own
// section type holding its defaults: each layer in turn, so a key a later
// layer leaves out keeps the earlier value. A key v has no field for is an
// ErrInvalidArgument error naming the key (name.key) and its file.
func (s Section) Decode(v any) error {
	for _, l := range s.layers {
		if err := l.md.PrimitiveDecode(l.sections[s.name], v); err != nil {
			return fmt.Errorf("%s: [%s]: %w: %w", l.name, s.name, err, errdefs.ErrInvalidArgument)
		}
		var unknown []string
		for _, k := range l.md.Undecoded() {
			if k[0] == s.name {
				unknown = append(unknown, k.String())
			}
		}
		if err := unknownKeys(l.name, unknown); err != nil {
			return err
		}
	}
	return nil
}

// Unowned returns an ErrInvalidArgument error naming every top-level table
// that is neither the sandboxer's nor one of owned (the sections of the
// backends this binary has), or nil.
func (c *Config) Unowned(owned ...string) error {
	var errs []error
	for _, l := range c.layers {
		var unknown []string
		for k := range l.sections {
			if !slices.Contains(owned, k) {
				unknown = append(unknown, k)
			}
		}
		if err := unknownKeys(l.name, unknown); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	case "wasm", "vm", "quark":
		return nil
	case "":
		if emptyOK {
			return nil
		}
	}
	return fmt.Errorf("%s = %q: use \"wasm\", \"vm\" or \"quark\": %w", where, v, errdefs.ErrInvalidArgument)
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
// runtime handler called name, or the default isolation when it is not
// configured. hypervisor is "" when the handler names none: the VM backend
// then uses its own default ([hypervisor] default).
func (c *Config) HandlerIsolation(name string) (isolation, hypervisor string) {
	isolation = c.Sandboxer.DefaultIsolation
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

// Source names where the value of key (a dotted path split in parts, such
// as "sandboxer", "listen") comes from: the last file that sets it, or
// "embedded defaults". Command-line overrides are the caller's to report.
func (c *Config) Source(key ...string) string {
	src := "embedded defaults"
	for _, l := range c.layers {
		if l.md.IsDefined(key...) {
			src = l.name
		}
	}
	return src
}
