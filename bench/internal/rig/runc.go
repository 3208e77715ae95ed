package rig

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BusyboxPath is Debian's busybox-static, which make deps installs.
const BusyboxPath = "/bin/busybox"

// Runc runs busybox echo containers with `runc run`, the baseline a
// Linux container start costs without containerd.
type Runc struct {
	Bin, Root, Bundle string
}

// NewRunc writes a bundle under dir whose rootfs holds busybox-static and
// whose process is `echo hello`, from `runc spec`'s defaults.
func NewRunc(ctx context.Context, dir string) (*Runc, error) {
	bin, err := Tool("runc")
	if err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("%w: install busybox-static (make deps)", err)
	}
	r := &Runc{Bin: bin, Root: filepath.Join(dir, "runc-root"), Bundle: filepath.Join(dir, "runc-bundle")}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", "echo")); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, bin, "spec", "--bundle", r.Bundle).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	p := filepath.Join(r.Bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var sp specs.Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("runc spec wrote %s: %w", p, err)
	}
	sp.Process.Terminal = false
	sp.Process.Args = []string{"/bin/echo", "hello"}
	if b, err = json.Marshal(&sp); err != nil {
		return nil, err
	}
	return r, os.WriteFile(p, b, 0o644)
}

// Run runs one container named id to its exit (runc run, which deletes it
// afterwards).
func (r *Runc) Run(ctx context.Context, id string) error {
	cmd := exec.CommandContext(ctx, r.Bin, "--root", r.Root, "run", "--bundle", r.Bundle, id)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc run: %w: %s", err, out)
	}
	if string(out) != "hello\n" {
		return fmt.Errorf("runc run printed %q, want \"hello\\n\"", out)
	}
	return nil
}
