package wasmbackend

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/bytesize"
)

// ConfigSection is the top-level table of kuasar-sandboxer's configuration
// this backend owns: [wasm].
const ConfigSection = "wasm"

// Config is the [wasm] section. The backend owns it: its keys, defaults
// and checks live here, and the sandboxer's configuration hands the section
// over undecoded (sandboxer/config.Section).
type Config struct {
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
	switch c.Engine {
	case "", "wazero":
	default:
		bad("engine", "%q is not built into kuasar-sandboxer: use \"wazero\" (WasmEdge is for `kuasar run --engine wasmedge` in a -tags wasmedge build only)", c.Engine)
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
	return []Option{
		WithDefaultMemoryLimit(mem),
		WithDefaultOpenFileLimit(c.DefaultOpenFileLimit),
		WithCacheDir(c.CacheDir),
	}, nil
}
