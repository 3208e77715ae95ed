package quark

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// ConfigSection is the top-level table of kuasar-sandboxer's configuration
// this backend owns: [quark].
const ConfigSection = "quark"

// Config is the [quark] section of the sandboxer's configuration. The
// backend owns it: its keys, defaults and checks live here, and the
// sandboxer's configuration hands the section over undecoded.
type Config struct {
	// Binary is the quark executable: a path, or a name looked up in
	// $PATH. "" means "quark".
	Binary string `toml:"binary"`
	// ConfigFile is Quark's own configuration, which must run it in
	// sandbox mode. "" means DefaultConfigFile.
	ConfigFile string `toml:"config_file"`
}

// DefaultConfigFile is where Quark reads its configuration.
const DefaultConfigFile = "/etc/quark/config.json"

// DefaultConfig is the [quark] section when the file sets none of it.
func DefaultConfig() Config {
	return Config{Binary: "quark", ConfigFile: DefaultConfigFile}
}

// Validate checks the section's values (not the host: see Backend.Check),
// reporting every bad key at once, each naming the key and the fix.
func (c Config) Validate() error {
	var errs []error
	if c.Binary == "" {
		errs = append(errs, fmt.Errorf("quark.binary: is empty: set the quark executable (a path, or a name in $PATH): %w", errdefs.ErrInvalidArgument))
	}
	if c.ConfigFile != "" && !filepath.IsAbs(c.ConfigFile) {
		errs = append(errs, fmt.Errorf("quark.config_file: %q is not an absolute path: the daemon's working directory is not part of its configuration: %w", c.ConfigFile, errdefs.ErrInvalidArgument))
	}
	return errors.Join(errs...)
}

// MinKernel is the oldest host kernel Quark's sandbox mode supports.
var MinKernel = [2]int{5, 15}

// check verifies what Quark's sandbox mode needs on this host, in the
// order a person would fix it: the binary, its configuration, the kernel.
// Each failure wraps errdefs.ErrFailedPrecondition and says the fix. It
// returns the binary's resolved path.
func check(cfg Config, osrelease string) (string, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = "quark"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("quark binary %q not found (%v): install Quark (github.com/QuarkContainer/Quark, \"make install\") or set binary in [quark] of the sandboxer's configuration: %w",
			bin, err, errdefs.ErrFailedPrecondition)
	}
	if err := checkConfigFile(cfg.ConfigFile); err != nil {
		return "", err
	}
	if err := checkKernel(osrelease); err != nil {
		return "", err
	}
	return path, nil
}

// checkConfigFile verifies that Quark's configuration asks for sandbox
// mode: "Sandboxed": true and "ShimMode": false (Quark's defaults are the
// other way round, for its containerd shim).
func checkConfigFile(file string) error {
	if file == "" {
		file = DefaultConfigFile
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("quark configuration %s: %w: install Quark (it ships one) or set config_file in [quark]: %w", file, err, errdefs.ErrFailedPrecondition)
	}
	var c map[string]json.RawMessage
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("quark configuration %s is not a JSON object (%v): fix the file: %w", file, err, errdefs.ErrFailedPrecondition)
	}
	for _, k := range []struct {
		key  string
		want bool
	}{{"Sandboxed", true}, {"ShimMode", false}} {
		raw, ok := c[k.key]
		var v bool
		if ok && json.Unmarshal(raw, &v) != nil {
			return fmt.Errorf("quark configuration %s: %q is %s, not a boolean: set \"%s\": %t: %w", file, k.key, raw, k.key, k.want, errdefs.ErrFailedPrecondition)
		}
		if !ok || v != k.want {
			got := "missing"
			if ok {
				got = string(raw)
			}
			return fmt.Errorf("quark configuration %s: %q is %s, sandbox mode needs it %t: set \"%s\": %t in that file: %w",
				file, k.key, got, k.want, k.key, k.want, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// checkKernel verifies that the kernel release in file osrelease
// (/proc/sys/kernel/osrelease) is at least MinKernel.
func checkKernel(osrelease string) error {
	b, err := os.ReadFile(osrelease)
	if err != nil {
		return fmt.Errorf("reading the kernel release: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	rel := strings.TrimSpace(string(b))
	major, minor, ok := parseRelease(rel)
	if !ok {
		return fmt.Errorf("kernel release %q cannot be read as MAJOR.MINOR: Quark needs Linux %d.%d or later: %w", rel, MinKernel[0], MinKernel[1], errdefs.ErrFailedPrecondition)
	}
	if major < MinKernel[0] || major == MinKernel[0] && minor < MinKernel[1] {
		return fmt.Errorf("kernel %s is older than %d.%d, which Quark needs: upgrade the host's kernel: %w", rel, MinKernel[0], MinKernel[1], errdefs.ErrFailedPrecondition)
	}
	return nil
}

// parseRelease reads MAJOR.MINOR from a kernel release such as
// "6.1.0-18-amd64".
func parseRelease(rel string) (major, minor int, ok bool) {
	a, rest, found := strings.Cut(rel, ".")
	if !found {
		return 0, 0, false
	}
	b := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		b = rest[:i]
	}
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	return major, minor, err1 == nil && err2 == nil
}
