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
	"github.com/kuasar-go/kuasar/quark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/sandboxer/config"
)

// runQuark runs a Linux image's workload in a Quark sandbox through the
// same backend kuasar-sandboxer serves quark pods with, configured by the
// [quark] section of the sandboxer's configuration. A host that cannot run
// Quark is told why and how to fix it (quark.Backend.Check).
func runQuark(ctx context.Context, env *cliEnv, wl *images.Workload, o *runOptions) int {
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
		return exitKuasarError
	}
	if wl.Rootfs == "" {
		return fail(fmt.Errorf("%s has no filesystem layers to run in Quark with (a Wasm module or artifact): run it with --isolation wasm: %w", o.target, errdefs.ErrInvalidArgument))
	}
	if len(o.dirs) > 0 {
		return fail(fmt.Errorf("--dir is not supported with --isolation quark yet: bake the files into the image: %w", errdefs.ErrNotImplemented))
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
	b := quark.New(cfg.Quark)
	if err := b.Check(); err != nil {
		return fail(fmt.Errorf("quark isolation: %w", err))
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
	const hostname = "kuasar"
	spec := &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Process:  proc,
		Root:     &specs.Root{Path: rootfs},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
		}},
	}
	r, err := runInSandbox(ctx, env, b, backend.Sandbox{Hostname: hostname, Resources: res}, spec, stateDir, o.timeout, false)
	if err != nil {
		if errors.Is(err, errCreate) && errdefs.IsNotFound(err) {
			fmt.Fprintf(env.stderr, "kuasar run: %s in Quark: %v\n", o.target, err)
			return exitFunctionNotFound
		}
		return fail(fmt.Errorf("%s in Quark: %w", o.target, err))
	}
	if r.timedOut && r.signal == 0 {
		fmt.Fprintf(env.stderr, "kuasar run: %s stopped after --timeout %v\n", o.target, o.timeout)
	}
	return r.code
}
