package wasmtask

import (
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/wasm"
)

// splitEntry splits an entrypoint written path#function.
func splitEntry(arg string) (file, function string) {
	if i := strings.LastIndexByte(arg, '#'); i >= 0 {
		return arg[:i], arg[i+1:]
	}
	return arg, ""
}

// defaultMapper maps a spec the way peers do: argv = process.args, env =
// process.env, cwd = process.cwd, the rootfs preopened at "/" (read-only when
// root.readonly), and bind mounts of host directories preopened at their
// destination. The module is process.args[0] (path#function) resolved inside
// the rootfs, relative paths against process.cwd.
func defaultMapper(spec *specs.Spec, rootfs string) (string, string, wasm.RunConfig, error) {
	var cfg wasm.RunConfig
	if spec.Process == nil || len(spec.Process.Args) == 0 || spec.Process.Args[0] == "" {
		return "", "", cfg, fmt.Errorf("the container spec has no process.args: set the image entrypoint (or the container command) to the Wasm module path, e.g. /app.wasm: %w", errdefs.ErrInvalidArgument)
	}
	p := spec.Process
	file, fn := splitEntry(p.Args[0])
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(file) {
		file = path.Join(cwd, file)
	}
	host, err := securejoin.SecureJoin(rootfs, file)
	if err != nil {
		return "", "", cfg, fmt.Errorf("resolve module %q inside the rootfs: %v: %w", p.Args[0], err, errdefs.ErrInvalidArgument)
	}
	args := append([]string{file}, p.Args[1:]...)
	cfg = wasm.RunConfig{
		Function: fn,
		Args:     args,
		Env:      append([]string(nil), p.Env...),
		Cwd:      cwd,
		Mounts: []wasm.Mount{{
			HostPath:  rootfs,
			GuestPath: "/",
			ReadOnly:  spec.Root != nil && spec.Root.Readonly,
		}},
	}
	for _, m := range spec.Mounts {
		if m.Type != "bind" && m.Type != "" && m.Type != "rbind" {
			continue
		}
		st, err := os.Stat(m.Source)
		if err != nil || !st.IsDir() || !path.IsAbs(m.Destination) || m.Destination == "/" {
			continue // files (hosts, resolv.conf) and pseudo file systems have no WASI preopen
		}
		ro := false
		for _, o := range m.Options {
			if o == "ro" {
				ro = true
			}
		}
		cfg.Mounts = append(cfg.Mounts, wasm.Mount{HostPath: m.Source, GuestPath: path.Clean(m.Destination), ReadOnly: ro})
	}
	if r := spec.Linux; r != nil && r.Resources != nil && r.Resources.Memory != nil && r.Resources.Memory.Limit != nil && *r.Resources.Memory.Limit > 0 {
		cfg.MemoryLimit = uint64(*r.Resources.Memory.Limit)
	}
	return host, fn, cfg, nil
}
