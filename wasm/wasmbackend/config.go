package wasmbackend

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/bytesize"
	"github.com/kuasar-go/kuasar/wasm/wasmedge"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// ConfigSection is the top-level table of kuasar-sandboxer's configuration
// this backend owns: [wasm].
const ConfigSection = "wasm"

// Config is the [wasm] section. The backend owns it: its keys, defaults
// and checks live here, and the sandboxer's configuration hands the section
// over undecoded (sandboxer/config.Section).
type Config struct {
	// Engine names the engine of sandboxes that ask for none: "wazero"
	// (default) or "wasmedge" (a `make wasmedge` build only; pods ask with
	// kuasar.io/wasm-engine, runtime handlers with wasm_engine).
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

// DefaultConfig returns the section's defaults, the values
// configs/config.toml ships.
func DefaultConfig() Config {
	return Config{
		Engine:               "wazero",
		CacheDir:             "/var/lib/kuasar/wasm-cache",
		DefaultMemoryLimit:   "512Mi",
		DefaultOpenFileLimit: 1024,
	}
}

// wasm32MaxMemory is all the memory a wasm32 guest can address.
const wasm32MaxMemory = 4 << 30

// MemoryLimitBytes parses DefaultMemoryLimit.
func (c Config) MemoryLimitBytes() (uint64, error) {
	n, err := bytesize.Parse(c.DefaultMemoryLimit)
	if err != nil {
		return 0, fmt.Errorf("wasm.default_memory_limit: %w", err)
	}
	if n > wasm32MaxMemory {
		return 0, fmt.Errorf("wasm.default_memory_limit %q is more than a wasm32 guest can address: use at most 4Gi: %w", c.DefaultMemoryLimit, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// Validate checks every key whose value decodes but cannot work and
// returns all the problems at once (errors.Join), each of kind
// ErrInvalidArgument, naming its key (wasm.KEY) and the fix.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("wasm.%s: %s: %w", key, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument))
	}
	if c.Engine != "" {
		if err := CheckEngine("wasm.engine", c.Engine); err != nil {
			errs = append(errs, err)
		}
	}
	if c.CacheDir != "" && !filepath.IsAbs(c.CacheDir) {
		bad("cache_dir", "%q is not an absolute path: the daemon's working directory is not part of its configuration", c.CacheDir)
	}
	if _, err := c.MemoryLimitBytes(); err != nil {
		errs = append(errs, err)
	}
	if c.DefaultOpenFileLimit < 8 {
		bad("default_open_file_limit", "%d: allow at least 8 (stdio, mounts and a few files; default 1024)", c.DefaultOpenFileLimit)
	}
	return errors.Join(errs...)
}

// Options returns the New options the section sets (after Validate).
func (c Config) Options() ([]Option, error) {
	mem, err := c.MemoryLimitBytes()
	if err != nil {
		return nil, err
	}
	if c.Engine == wasmedge.EngineName && !wasmedge.Built {
		return nil, fmt.Errorf("wasm.engine %q: %w", c.Engine, wasmedge.ErrNotBuilt)
	}
	return []Option{
		WithDefaultMemoryLimit(mem),
		WithDefaultOpenFileLimit(c.DefaultOpenFileLimit),
		WithCacheDir(c.CacheDir),
		WithDefaultEngine(c.Engine),
	}, nil
}

// CheckEngine reports whether name (the value of key) is a Wasm engine
// this backend knows ("wazero", "wasmedge"); whether this build has
// WasmEdge is answered when it is used.
func CheckEngine(key, name string) error {
	switch name {
	case wazero.EngineName, wasmedge.EngineName:
		return nil
	}
	return fmt.Errorf("%s: %q is not a Wasm engine: use %q or %q (the latter in a `make wasmedge` build): %w", key, name, wazero.EngineName, wasmedge.EngineName, errdefs.ErrInvalidArgument)
}
