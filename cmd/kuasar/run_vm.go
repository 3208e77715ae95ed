package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/cmd/internal/backends"
	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/sandboxer/config"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

func init() {
	runSandboxed = runIsolated
}

// runIsolated runs a workload that needs a sandbox of its own: a micro-VM for
// "vm" isolation. The hypervisor, kernel and initramfs come from the
// kuasar-sandboxer configuration ($KUASAR_CONFIG, else
// /etc/kuasar/config.toml, else the embedded defaults), so the CLI and the
// daemon boot the same guests.
func runIsolated(ctx context.Context, env *cliEnv, wl *images.Workload, iso images.Isolation, o *runOptions) int {
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
		return exitKuasarError
	}
	switch iso {
	case images.IsolationVM:
	case images.IsolationQuark:
		return runQuark(ctx, env, wl, o)
	default:
		return fail(fmt.Errorf("isolation %q is not known: use auto, wasm, vm or quark: %w", iso, errdefs.ErrInvalidArgument))
	}
	if wl.Rootfs == "" {
		return fail(fmt.Errorf("%s has no filesystem layers to boot a VM with (a Wasm module or artifact): run it with --isolation wasm: %w", o.target, errdefs.ErrInvalidArgument))
	}
	if len(o.dirs) > 0 {
		// Refuse rather than ignore: a user who shared a directory must not
		// believe the guest sees it.
		return fail(fmt.Errorf("--dir is not supported with --isolation vm yet: bake the files into the image: %w", errdefs.ErrNotImplemented))
	}

	cfgPath := os.Getenv("KUASAR_CONFIG")
	mustExist := cfgPath != ""
	if cfgPath == "" {
		cfgPath = config.DefaultPath
	}
	cfg, err := backends.Load(cfgPath, mustExist)
	if err != nil {
		return fail(err)
	}
	name := cfg.VM.Default
	if wl.Metadata.Hypervisor != "" {
		name = wl.Metadata.Hypervisor
	}
	hv, err := cfg.VM.Get(name)
	if err != nil {
		return fail(err)
	}
	switch o.vmTmpl {
	case "":
	case vmbackend.TemplateAuto, vmbackend.TemplateOff:
		hv.Template = o.vmTmpl
	default:
		return fail(fmt.Errorf("--vm-template %q: use auto or off: %w", o.vmTmpl, errdefs.ErrInvalidArgument))
	}
	proc, err := linuxProcess(wl, o)
	if err != nil {
		return fail(err)
	}
	rootfs, err := filepath.Abs(wl.Rootfs)
	if err != nil {
		return fail(err)
	}
	stateDir := filepath.Join(env.stateDir, "run")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fail(err)
	}
	var res backend.Resources
	if o.memory > 0 {
		res.MemoryLimitBytes = uint64(o.memory)
	}
	// The same backend kuasar-sandboxer serves pods with, told the one
	// container's rootfs before boot (rootfs_mode "block" attaches it as
	// a disk).
	// Templates are kept across runs (`kuasar vm-templates` lists them);
	// a warm pool would die with this process, so there is none.
	b, err := vmbackend.New(ctx, append(cfg.VM.Options(), vmbackend.WithDefaultHypervisor(name), vmbackend.WithHypervisor(name, hv),
		vmbackend.WithBootRootfs(containerID, rootfs, ""), vmbackend.WithTemplateDir(filepath.Join(env.stateDir, "vm-templates")),
		vmbackend.WithoutPool())...)
	if err != nil {
		return fail(err)
	}
	const hostname = "kuasar"
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Process:  proc,
		Root:     &specs.Root{Path: rootfs},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
		}},
	}
	r, err := runInSandbox(ctx, env, b, backend.Sandbox{Hostname: hostname, Resources: res, Hypervisor: name}, spec, stateDir, o.timeout, false)
	if err != nil {
		if errors.Is(err, errCreate) && errdefs.IsNotFound(err) {
			fmt.Fprintf(env.stderr, "kuasar run: %s in a %s VM: %v\n", o.target, name, err)
			return exitFunctionNotFound
		}
		return fail(fmt.Errorf("%s in a %s VM: %w", o.target, name, err))
	}
	if r.timedOut && r.signal == 0 {
		fmt.Fprintf(env.stderr, "kuasar run: %s stopped after --timeout %v\n", o.target, o.timeout)
	}
	return r.code
}

// linuxProcess is the process a Linux image runs: its args (see
// linuxArgs), its environment with --env over it, and its working directory
// (--workdir, else the image's, else /).
func linuxProcess(wl *images.Workload, o *runOptions) (*specs.Process, error) {
	args := linuxArgs(wl, o.args)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command to run: the image has no entrypoint/cmd, pass one after --: %w", errdefs.ErrInvalidArgument)
	}
	envs, err := mergeEnv(wl.Env, o.envs)
	if err != nil {
		return nil, err
	}
	cwd := wl.WorkingDir
	if o.workdir != "" {
		cwd = o.workdir
	}
	if cwd == "" {
		cwd = "/"
	}
	return &specs.Process{Args: args, Env: envs, Cwd: cwd}, nil
}

// linuxArgs is the process of a Linux image: ARGS replace the image's Cmd and
// keep its Entrypoint, as docker run does.
func linuxArgs(wl *images.Workload, userArgs []string) []string {
	if userArgs == nil {
		return wl.Args
	}
	return append(append([]string(nil), wl.Entrypoint...), userArgs...)
}
