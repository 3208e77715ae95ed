// Package runspec maps an OCI runtime spec (config.json) onto a wasm.RunConfig,
// the way a container runtime maps it onto a Linux process: process.args
// become argv, process.env the environment, the rootfs and bind mounts become
// WASI preopens, and the memory cgroup limit caps linear memory.
//
// It is shared by the task service (containers created through containerd)
// and the CLI, so that a module behaves the same whichever way it is started.
package runspec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/wasm"
)

// SplitFunction splits an entrypoint written "path#function" into the module
// path and the function to start; function is "" when none is named (the
// engine then starts wasm.DefaultFunction).
func SplitFunction(entry string) (modulePath, function string) {
	if i := strings.LastIndexByte(entry, '#'); i >= 0 {
		return entry[:i], entry[i+1:]
	}
	return entry, ""
}

// FromSpec returns the module file to run (a host path inside rootfs), the
// function to start and the run configuration for spec.
//
// process.args[0] names the module, optionally as "path#function" (a file
// whose name itself contains '#' is found first); a relative path is taken
// from process.cwd. argv[0] the guest sees is args[0] without
// the "#function" suffix. rootfs is preopened at "/" (read-only when
// root.readonly is set) and every bind mount whose source is a directory at
// its destination (read-only with the "ro" option). Other mounts (proc,
// tmpfs, ...) and bind mounts of single files have no WASI equivalent and are
// left out. linux.resources.memory.limit becomes the memory limit, and the
// soft RLIMIT_NOFILE of process.rlimits the open-file limit.
//
// With an empty rootfs (a module held outside any file system, such as an
// image whose module is a Wasm layer), nothing is preopened at "/" and
// modulePath is "": the caller supplies the module bytes.
//
// Every error is of kind errdefs.ErrInvalidArgument or errdefs.ErrNotFound and
// names the spec field to fix. The stdio fields of the result are left nil.
func FromSpec(spec *specs.Spec, rootfs string) (modulePath, function string, cfg wasm.RunConfig, err error) {
	modulePath, _, function, cfg, err = fromSpec(spec, rootfs, false)
	return modulePath, function, cfg, err
}

// FromSpecOpen is FromSpec returning the module file opened (OpenInRoot)
// instead of its host path: the file FromSpec's path names, found with one
// lookup in the kernel in the common case instead of a walk, a check and a
// second lookup to open it. With an empty rootfs the file is nil, as
// FromSpec's path is "". The caller must Close the file.
func FromSpecOpen(spec *specs.Spec, rootfs string) (module *ModuleFile, function string, cfg wasm.RunConfig, err error) {
	_, module, function, cfg, err = fromSpec(spec, rootfs, true)
	return module, function, cfg, err
}

// fromSpec is FromSpec, and with open FromSpecOpen.
func fromSpec(spec *specs.Spec, rootfs string, open bool) (modulePath string, module *ModuleFile, function string, cfg wasm.RunConfig, err error) {
	var opened *ModuleFile
	defer func() {
		if err != nil && opened != nil {
			opened.Close()
		}
	}()
	if spec == nil || spec.Process == nil || len(spec.Process.Args) == 0 || spec.Process.Args[0] == "" {
		return "", nil, "", cfg, fmt.Errorf("spec has no process.args: set the image entrypoint (or command) to the .wasm module path: %w", errdefs.ErrInvalidArgument)
	}
	p := spec.Process
	entry, function := SplitFunction(p.Args[0])
	if entry == "" {
		return "", nil, "", cfg, fmt.Errorf("process.args[0] %q names a function but no module: write it as /path/module.wasm#function: %w", p.Args[0], errdefs.ErrInvalidArgument)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return "", nil, "", cfg, fmt.Errorf("process.cwd %q is not absolute: %w", p.Cwd, errdefs.ErrInvalidArgument)
	}
	cfg = wasm.RunConfig{
		Function: function,
		Args:     append([]string{entry}, p.Args[1:]...),
		Env:      slices.Clone(p.Env),
		Cwd:      path.Clean(cwd),
	}

	if rootfs != "" {
		if !filepath.IsAbs(rootfs) {
			return "", nil, "", cfg, fmt.Errorf("rootfs %q is not absolute: %w", rootfs, errdefs.ErrInvalidArgument)
		}
		name := entry
		if !path.IsAbs(name) {
			// Not path.Join: it would clean away a ".." that climbs out.
			name = cfg.Cwd + "/" + name
		}
		resolve := func(name string) error {
			if open {
				opened, err = OpenInRoot(rootfs, name)
			} else {
				modulePath, err = ResolveInRoot(rootfs, name)
			}
			return err
		}
		if err = resolve(name); err != nil && function != "" {
			// A file whose name really contains '#'.
			whole := p.Args[0]
			if !path.IsAbs(whole) {
				whole = cfg.Cwd + "/" + whole
			}
			first := err
			if resolve(whole) == nil {
				function = ""
				cfg.Function, cfg.Args[0] = "", p.Args[0]
			} else {
				err = first
			}
		}
		if err != nil {
			return "", nil, "", cfg, fmt.Errorf("process.args[0] %q: %w", p.Args[0], err)
		}
		cfg.Mounts = append(cfg.Mounts, wasm.Mount{HostPath: rootfs, GuestPath: "/", ReadOnly: spec.Root != nil && spec.Root.Readonly})
	}

	for i, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		// A relative destination is a WASI preopen name, as wasmtime's
		// --dir gives ("." is the guest's current directory); it may not
		// start with "..".
		dst := path.Clean(m.Destination)
		if !filepath.IsAbs(m.Source) || m.Destination == "" || dst == ".." || strings.HasPrefix(dst, "../") {
			return "", nil, "", cfg, fmt.Errorf("mounts[%d] (%s -> %s): the source must be an absolute path and the destination absolute or a relative name not starting with \"..\": %w", i, m.Source, m.Destination, errdefs.ErrInvalidArgument)
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return "", nil, "", cfg, fmt.Errorf("mounts[%d]: bind source %s: %w: create it or drop the mount: %w", i, m.Source, err, errdefs.ErrNotFound)
		}
		if !st.IsDir() {
			// WASI preopens are directories; files such as /etc/hosts
			// that CRI binds in have no WASI equivalent.
			continue
		}
		cfg.Mounts = append(cfg.Mounts, wasm.Mount{
			HostPath:  m.Source,
			GuestPath: dst,
			ReadOnly:  slices.Contains(m.Options, "ro"),
		})
	}

	if l := spec.Linux; l != nil && l.Resources != nil && l.Resources.Memory != nil && l.Resources.Memory.Limit != nil {
		if lim := *l.Resources.Memory.Limit; lim > 0 {
			cfg.MemoryLimit = uint64(lim)
		}
	}
	for _, rl := range p.Rlimits {
		if rl.Type == "RLIMIT_NOFILE" {
			cfg.OpenFileLimit = int(min(rl.Soft, maxOpenFileLimit))
		}
	}
	return modulePath, opened, function, cfg, nil
}

// maxOpenFileLimit caps an RLIMIT_NOFILE taken from a spec, as Linux's
// fs.nr_open default does; the runtime's own budget still applies below it.
const maxOpenFileLimit = 1 << 20

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// maxSymlinks bounds symlink resolution, as Linux does (ELOOP after 40).
const maxSymlinks = 40

// ErrEscape is wrapped by the errors ResolveInRoot returns for paths that
// leave the root through ".." or a symlink.
var ErrEscape = errors.New("path escapes the container root")

// ResolveInRoot resolves name (absolute, as the container sees it) inside the
// host directory root, following symlinks the way the container would (an
// absolute link target starts again at root), and returns the host path of
// the regular file it names. A path or link that climbs above root with ".."
// is refused rather than clamped: it would mean something else on the host.
func ResolveInRoot(root, name string) (string, error) {
	var stack []string // resolved components below root
	todo := splitPath(name)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return "", fmt.Errorf("%q climbs above the root with \"..\": use a path inside the image: %w (%w)", name, ErrEscape, errdefs.ErrInvalidArgument)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		host := filepath.Join(root, filepath.Join(stack...), c)
		st, err := os.Lstat(host)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("module %s not found in the image root: check the entrypoint path: %w", name, errdefs.ErrNotFound)
			}
			return "", fmt.Errorf("module %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			links++
			if links > maxSymlinks {
				return "", fmt.Errorf("module %s: too many levels of symbolic links: %w", name, errdefs.ErrInvalidArgument)
			}
			target, err := os.Readlink(host)
			if err != nil {
				return "", fmt.Errorf("module %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
			}
			if path.IsAbs(target) {
				stack = stack[:0]
			}
			todo = append(splitPath(target), todo...)
			continue
		}
		stack = append(stack, c)
		if len(todo) > 0 && !st.IsDir() {
			return "", fmt.Errorf("module %s: %s is not a directory: %w", name, "/"+strings.Join(stack, "/"), errdefs.ErrNotFound)
		}
	}
	host := filepath.Join(root, filepath.Join(stack...))
	// The walk above reads names to explain refusals; what the path names
	// is decided by the kernel, once, inside the root (fsroot): a rename
	// racing the walk can change the answer but not lead out of root.
	r, err := fsroot.Open(root)
	if err != nil {
		return "", fmt.Errorf("module %s: rootfs: %w: %w", name, err, errdefs.ErrNotFound)
	}
	defer r.Close()
	st, err := r.Stat(name)
	if err != nil {
		return "", fmt.Errorf("module %s: %w: %w", name, err, errdefs.ErrNotFound)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("module %s is not a regular file (it resolves to /%s): point the entrypoint at the .wasm file: %w", name, strings.Join(stack, "/"), errdefs.ErrInvalidArgument)
	}
	return host, nil
}

// ReadModule reads the module at modulePath, a path FromSpec or
// ResolveInRoot returned inside the host directory root. The file is
// opened through root's directory fd with openat2(RESOLVE_IN_ROOT)
// (package fsroot), never by the joined host path, so a container that
// swaps a directory for a symlink meanwhile cannot make the host read a file
// outside its rootfs.
func ReadModule(root, modulePath string) ([]byte, error) {
	f, err := OpenModule(root, modulePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadAll()
}

func splitPath(p string) []string {
	return strings.Split(p, "/")
}
