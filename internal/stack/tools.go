package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/containerd/errdefs"
)

// Versions of the peers `make deps` (.ci/deps.sh) builds and the stack is
// tested against.
const (
	ContainerdVersion = "v2.4.2"
	CrictlVersion     = "v1.37.0"
)

// Environment variables naming a tool's binary, checked after an explicit
// path and before $PATH.
const (
	EnvContainerd = "KUASAR_CONTAINERD"
	EnvCtr        = "KUASAR_CTR"
	EnvCrictl     = "KUASAR_CRICTL"
	// EnvTools names the directory `make deps` builds the tools into.
	EnvTools = "KUASAR_TOOLS"
)

// Tools are the paths of the external binaries the stack runs.
type Tools struct {
	// Containerd is the containerd daemon (v2.x, config version 4).
	Containerd string
	// Ctr imports images into containerd.
	Ctr string
	// Crictl drives pods through CRI.
	Crictl string
	// RuncShim is containerd-shim-runc-v2 ("" when absent): only the
	// runc runtime handler needs it.
	RuncShim string
}

// ToolsDir is $KUASAR_TOOLS, else ~/.cache/kuasar-tools: where .ci/deps.sh
// builds containerd, ctr, containerd-shim-runc-v2 and crictl.
func ToolsDir() string {
	if d := os.Getenv(EnvTools); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "kuasar-tools")
}

// FindTools resolves each tool that has no explicit path in t: its
// environment variable, then $PATH, then the directory `make deps` builds
// into (ToolsDir). A missing tool is ErrNotFound naming the fix.
func FindTools(t Tools) (Tools, error) {
	containerdDir := filepath.Join(ToolsDir(), "containerd-"+ContainerdVersion)
	crictlDir := filepath.Join(ToolsDir(), "crictl-"+CrictlVersion)
	var err error
	if t.Containerd, err = findTool(t.Containerd, EnvContainerd, "containerd", containerdDir, isContainerd2); err != nil {
		return t, err
	}
	// ctr from the same release as containerd, when it has one beside it.
	if t.Ctr == "" && os.Getenv(EnvCtr) == "" {
		if p := filepath.Join(filepath.Dir(t.Containerd), "ctr"); isExecutable(p) {
			t.Ctr = p
		}
	}
	if t.Ctr, err = findTool(t.Ctr, EnvCtr, "ctr", containerdDir, nil); err != nil {
		return t, err
	}
	if t.Crictl, err = findTool(t.Crictl, EnvCrictl, "crictl", crictlDir, nil); err != nil {
		return t, err
	}
	if t.RuncShim == "" {
		// Beside the containerd in use first, so that both come from one
		// release.
		for _, d := range []string{filepath.Dir(t.Containerd), containerdDir} {
			if p := filepath.Join(d, "containerd-shim-runc-v2"); isExecutable(p) {
				t.RuncShim = p
				break
			}
		}
		if t.RuncShim == "" {
			t.RuncShim, _ = exec.LookPath("containerd-shim-runc-v2")
		}
	}
	return t, nil
}

// findTool returns explicit, else $env, else name in $PATH when pathOK
// (nil: any) accepts it, else dir/name.
func findTool(explicit, env, name, dir string, pathOK func(string) bool) (string, error) {
	if explicit != "" {
		if !isExecutable(explicit) {
			return "", fmt.Errorf("%s %s is not an executable file: %w", name, explicit, errdefs.ErrNotFound)
		}
		return explicit, nil
	}
	if p := os.Getenv(env); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("$%s=%s is not an executable file: %w", env, p, errdefs.ErrNotFound)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil && (pathOK == nil || pathOK(p)) {
		return p, nil
	}
	if p := filepath.Join(dir, name); isExecutable(p) {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in $%s, $PATH or %s: run make deps (it builds it there), or set $%s: %w",
		name, env, dir, env, errdefs.ErrNotFound)
}

// isContainerd2 reports whether the containerd at p is a 2.x release
// (the stack's configuration is version 4): Debian 12's own containerd
// package is 1.6, which a PATH lookup must pass over.
func isContainerd2(p string) bool {
	out, err := exec.Command(p, "--version").Output()
	return err == nil && containerd2Version.Match(out)
}

// containerd2Version matches `containerd --version` of a 2.x release
// ("containerd github.com/containerd/containerd/v2 v2.4.2 <commit>", or
// "2.4.2+unknown" when built with go install).
var containerd2Version = regexp.MustCompile(`\sv?2\.\d+\.\d+`)

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// FindBinaries returns the directory holding kuasar-sandboxer and
// containerd-shim-kuasar-v1: dir when given, else the directory of the
// running executable (bin/ after make build), else the one in $PATH.
func FindBinaries(dir string) (string, error) {
	has := func(d string) bool {
		return isExecutable(filepath.Join(d, "kuasar-sandboxer")) && isExecutable(filepath.Join(d, "containerd-shim-kuasar-v1"))
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s lacks kuasar-sandboxer or containerd-shim-kuasar-v1: run make build: %w", dir, errdefs.ErrNotFound)
		}
		return dir, nil
	}
	if exe, err := os.Executable(); err == nil {
		if d := filepath.Dir(exe); has(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("kuasar-sandboxer"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("kuasar-sandboxer and containerd-shim-kuasar-v1 are neither beside this program nor in $PATH: run make build (bin/) or make install: %w", errdefs.ErrNotFound)
}
