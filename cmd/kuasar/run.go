package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/bytesize"
	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/runspec"
	"github.com/kuasar-go/kuasar/wasm/wasmbackend"
	"github.com/kuasar-go/kuasar/wasm/wazero"
)

// Exit codes kuasar itself returns, as docker run does.
const (
	// exitKuasarError: kuasar could not run the workload (bad flags, bad
	// module, no such file, engine failure before the guest started).
	exitKuasarError = 125
	// exitFunctionNotFound: the module has no such function (docker's
	// "command not found").
	exitFunctionNotFound = 127
)

func init() {
	register("run", "run a .wasm module (or an image) in the sandbox it asks for", runCommand)
}

// engineFactories are the Wasm engines this build has, by --engine name.
// Engines behind build tags add themselves from their own init().
var engineFactories = map[string]func(ctx context.Context, cacheDir string) (wasm.Engine, error){
	wazero.EngineName: func(ctx context.Context, cacheDir string) (wasm.Engine, error) {
		var opts []wazero.Option
		if cacheDir != "" {
			opts = append(opts, wazero.WithCacheDir(cacheDir))
		}
		return wazero.New(ctx, opts...)
	},
}

// runSandboxed runs a workload that needs VM or Quark isolation. It is nil
// until the VM backend registers itself; the VM engineer sets it from an
// init() in another file.
var runSandboxed func(ctx context.Context, env *cliEnv, wl *images.Workload, iso images.Isolation, o *runOptions) int

// runOptions are the parsed flags of `kuasar run`.
type runOptions struct {
	dirs      dirFlag
	envs      listFlag
	memory    sizeFlag
	openFiles int
	timeout   time.Duration
	isolation string
	engine    string
	plainHTTP bool
	images    imageFlags // registry timeouts and layer limits
	workdir   string
	vmTmpl    string // --vm-template: "", auto or off
	target    string
	args      []string // nil: the image's default args
}

func runUsage(fs *flag.FlagSet) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintln(w, "usage: kuasar run [flags] TARGET [-- ARGS...]")
		fmt.Fprintln(w, "\nRuns TARGET (a .wasm file, path.wasm#function to start another export).")
		fmt.Fprintln(w, "ARGS replace the image's default arguments; argv[0] stays the module.")
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
}

func parseRunFlags(env *cliEnv, args []string) (*runOptions, int, bool) {
	o := &runOptions{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Var(&o.dirs, "dir", "make host directory HOST visible to the guest at GUEST (default: HOST); HOST[:GUEST][:ro]; repeatable")
	fs.Var(&o.envs, "env", "set KEY=VALUE in the guest's environment (KEY alone copies it from kuasar's); repeatable")
	fs.Var(&o.memory, "memory", "cap the guest's memory: bytes or a size like 64Mi, 512M, 1G; for Wasm guests the default is 512Mi and max means the wasm32 maximum (4Gi)")
	fs.IntVar(&o.openFiles, "open-files", defaultOpenFiles, "most files the guest may hold open, stdio and --dir mounts included (its RLIMIT_NOFILE); past it opens fail with EMFILE")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop the guest after this long (exit code 137), e.g. 500ms, 10s; 0 means never")
	fs.StringVar(&o.isolation, "isolation", "auto", "sandbox kind: auto (the image decides), wasm, vm or quark")
	fs.StringVar(&o.engine, "engine", wazero.EngineName, "Wasm engine")
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "talk plain HTTP to registries (local test registries only)")
	o.images.register(fs)
	fs.StringVar(&o.workdir, "workdir", "", "the guest's working directory (default: the image's, else /)")
	fs.StringVar(&o.vmTmpl, "vm-template", "", "vm isolation: auto restores the VM from a template (built on the first run) when one fits, off always boots it (default: [hypervisor.NAME] template, else auto)")
	fs.Usage = runUsage(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, false
		}
		return nil, exitKuasarError, false
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(env.stderr, "kuasar run: missing TARGET (a .wasm file)")
		fs.Usage()
		return nil, exitKuasarError, false
	}
	o.target = fs.Arg(0)
	rest := fs.Args()[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
		o.args = []string{} // "--" with nothing after still clears the default args
	}
	if len(rest) > 0 {
		o.args = rest
	}
	if o.openFiles < 1 {
		fmt.Fprintf(env.stderr, "kuasar run: --open-files %d: give a positive count (default %d)\n", o.openFiles, defaultOpenFiles)
		return nil, exitKuasarError, false
	}
	if o.timeout < 0 {
		fmt.Fprintf(env.stderr, "kuasar run: --timeout %v is negative\n", o.timeout)
		return nil, exitKuasarError, false
	}
	return o, 0, true
}

func runCommand(ctx context.Context, env *cliEnv, args []string) int {
	o, code, ok := parseRunFlags(env, args)
	if !ok {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
		return exitKuasarError
	}
	// Guest paths are resolved with openat2(2); no unsafe fallback.
	if err := fsroot.Check(); err != nil {
		return fail(err)
	}
	iso, err := images.ParseIsolation(o.isolation)
	if err != nil {
		return fail(fmt.Errorf("--isolation: %w", err))
	}
	wl, err := resolveTarget(ctx, env, o)
	if err != nil {
		return fail(err)
	}
	if iso == images.IsolationAuto {
		iso = wl.Metadata.Isolation
	}
	if iso == images.IsolationAuto {
		iso = images.IsolationWasm
		if wl.Metadata.Kind == images.KindLinux {
			iso = images.IsolationVM
		}
	}
	switch {
	case iso != images.IsolationWasm:
		if runSandboxed == nil {
			return fail(fmt.Errorf("%s isolation is not available in this build: run %s with --isolation wasm: %w", iso, o.target, errdefs.ErrNotImplemented))
		}
		return runSandboxed(ctx, env, wl, iso, o)
	case wl.Metadata.Kind != images.KindWasm || len(wl.Module) == 0:
		return fail(fmt.Errorf("%s is a Linux image, not a Wasm one: run it with --isolation vm: %w", o.target, errdefs.ErrInvalidArgument))
	}
	return runWasm(ctx, env, wl, o)
}

// runWasm runs a Wasm workload in-process through the "wasm" backend, the
// one kuasar-sandboxer serves Wasm pods with, and returns the guest's exit
// code.
func runWasm(ctx context.Context, env *cliEnv, wl *images.Workload, o *runOptions) int {
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
		return exitKuasarError
	}
	cfg, err := runConfig(wl, o)
	if err != nil {
		return fail(err)
	}
	newEngine, ok := engineFactories[o.engine]
	if !ok {
		return fail(fmt.Errorf("--engine %q is not available in this build (have: %s): %w", o.engine, strings.Join(engineNames(), ", "), errdefs.ErrInvalidArgument))
	}
	cacheDir := filepath.Join(env.stateDir, "cache", o.engine)
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		fmt.Fprintf(env.stderr, "kuasar run: warning: no compilation cache (%v); set KUASAR_STATE_DIR to a writable directory\n", err)
		cacheDir = ""
	}
	eng, err := newEngine(ctx, cacheDir)
	if err != nil {
		return fail(err)
	}
	bg := context.WithoutCancel(ctx)
	defer eng.Close(bg)
	// Compiled here to report a bad module as kuasar's error, naming the
	// target; the backend's Create finds it in the engine's memo.
	if _, err := eng.Compile(ctx, wl.Module); err != nil {
		return fail(fmt.Errorf("%s: %w", o.target, err))
	}
	b, err := wasmbackend.New(ctx, wasmbackend.WithEngine(eng),
		wasmbackend.WithModuleResolver(workloadModule{module: wl.Module, function: cfg.Function}))
	if err != nil {
		return fail(err)
	}
	defer b.Close(bg)
	r, err := runInSandbox(ctx, env, b, backend.Sandbox{}, wasmSpec(cfg, wl.Rootfs), runtimeDir(), o.timeout, true)
	if err != nil {
		if errors.Is(err, errCreate) && errdefs.IsNotFound(err) {
			fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
			return exitFunctionNotFound
		}
		return fail(err)
	}
	if r.timedOut && r.signal == 0 {
		fmt.Fprintf(env.stderr, "kuasar run: %s stopped after --timeout %v\n", o.target, o.timeout)
	}
	return r.code
}

// workloadModule hands the backend the module kuasar already read (a file
// or an image's wasm layer), as containerd's content store does for the
// daemon.
type workloadModule struct {
	module   []byte
	function string
}

// ResolveModule implements wasmtask.ModuleResolver.
func (w workloadModule) ResolveModule(context.Context, string, string) ([]byte, string, error) {
	return w.module, w.function, nil
}

// wasmSpec is the OCI runtime spec of a Wasm container that runs as cfg
// says: what containerd would hand the backend for the same container.
// Its root is the image's unpacked layers, read-only (the shared image
// store must never change: --dir gives writable space); a bare module has
// none, and sees only its --dir mounts.
func wasmSpec(cfg wasm.RunConfig, rootfs string) *specs.Spec {
	argv0 := cfg.Args[0]
	if cfg.Function != "" {
		argv0 += "#" + cfg.Function
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	limit := int64(cfg.MemoryLimit)
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args:    append([]string{argv0}, cfg.Args[1:]...),
			Env:     cfg.Env,
			Cwd:     cwd,
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: uint64(cfg.OpenFileLimit), Soft: uint64(cfg.OpenFileLimit)}},
		},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}},
	}
	if rootfs != "" {
		spec.Root = &specs.Root{Path: rootfs, Readonly: true}
	}
	for _, m := range cfg.Mounts {
		if m.GuestPath == "/" && m.HostPath == rootfs {
			continue // the root itself
		}
		opt := "rw"
		if m.ReadOnly {
			opt = "ro"
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m.GuestPath, Source: m.HostPath, Type: "bind", Options: []string{"rbind", opt}})
	}
	return spec
}

// runConfig builds the guest's configuration from the workload's defaults
// and the flags.
func runConfig(wl *images.Workload, o *runOptions) (wasm.RunConfig, error) {
	argv0, function := "", wl.Function
	if len(wl.Args) > 0 {
		var fn string
		argv0, fn = runspec.SplitFunction(wl.Args[0])
		if function == "" {
			function = fn
		}
	}
	if argv0 == "" {
		argv0 = path.Base(wl.Reference)
	}
	args := []string{argv0}
	if o.args != nil {
		args = append(args, o.args...)
	} else if len(wl.Args) > 1 {
		args = append(args, wl.Args[1:]...)
	}
	envs, err := mergeEnv(wl.Env, o.envs)
	if err != nil {
		return wasm.RunConfig{}, err
	}
	cwd := wl.WorkingDir
	if o.workdir != "" {
		cwd = o.workdir
	}
	if cwd != "" && !path.IsAbs(cwd) {
		return wasm.RunConfig{}, fmt.Errorf("--workdir %q: must be an absolute guest path: %w", cwd, errdefs.ErrInvalidArgument)
	}
	memory := uint64(o.memory)
	switch {
	case memory == 0:
		memory = defaultMemoryLimit
	case memory > wasm32MaxMemory:
		return wasm.RunConfig{}, fmt.Errorf("--memory %s is more than a wasm32 guest can address: use at most 4Gi (or max): %w", o.memory.String(), errdefs.ErrInvalidArgument)
	}
	var mounts []wasm.Mount
	if wl.Rootfs != "" {
		// The unpacked image lives in the shared store: never let a run
		// change it. Use --dir for writable space.
		mounts = append(mounts, wasm.Mount{HostPath: wl.Rootfs, GuestPath: "/", ReadOnly: true})
	}
	mounts = append(mounts, o.dirs...)
	return wasm.RunConfig{
		Function:      function,
		Args:          args,
		Env:           envs,
		Cwd:           cwd,
		Mounts:        mounts,
		MemoryLimit:   memory,
		OpenFileLimit: o.openFiles,
		Timeout:       o.timeout,
	}, nil
}

// mergeEnv appends the --env values to the image's environment; a key given
// again replaces the earlier value in place. "KEY" alone takes kuasar's own
// value, and is dropped when kuasar has none (as docker run -e does).
func mergeEnv(base, flags []string) ([]string, error) {
	out := append([]string(nil), base...)
	index := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, kv := range flags {
		k, _, hasValue := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: missing the variable name; write KEY=VALUE: %w", kv, errdefs.ErrInvalidArgument)
		}
		if !hasValue {
			v, ok := os.LookupEnv(k)
			if !ok {
				continue
			}
			kv = k + "=" + v
		}
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	return out, nil
}

func engineNames() []string {
	var names []string
	for n := range engineFactories {
		names = append(names, n)
	}
	return names
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// dirFlag is a repeatable HOST[:GUEST][:ro] flag.
type dirFlag []wasm.Mount

func (d *dirFlag) String() string {
	var s []string
	for _, m := range *d {
		s = append(s, m.HostPath+":"+m.GuestPath)
	}
	return strings.Join(s, ",")
}

func (d *dirFlag) Set(v string) error {
	m, err := parseDir(v)
	if err != nil {
		return err
	}
	*d = append(*d, m)
	return nil
}

func parseDir(v string) (wasm.Mount, error) {
	var m wasm.Mount
	parts := strings.Split(v, ":")
	switch last := parts[len(parts)-1]; {
	case len(parts) > 1 && last == "ro":
		m.ReadOnly = true
		parts = parts[:len(parts)-1]
	case len(parts) > 1 && last == "rw":
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 2 || parts[0] == "" {
		return m, fmt.Errorf("%q: want HOST[:GUEST][:ro]", v)
	}
	host, err := filepath.Abs(parts[0])
	if err != nil {
		return m, err
	}
	m.HostPath = host
	m.GuestPath = parts[0]
	if len(parts) == 2 {
		m.GuestPath = parts[1]
	}
	if !path.IsAbs(m.GuestPath) {
		if len(parts) == 2 {
			return m, fmt.Errorf("%q: the guest path %q must be absolute", v, m.GuestPath)
		}
		m.GuestPath = host // a relative HOST appears at the same absolute path
	}
	st, err := os.Stat(host)
	if err != nil {
		return m, fmt.Errorf("%q: %w", v, err)
	}
	if !st.IsDir() {
		return m, fmt.Errorf("%q: %s is not a directory", v, host)
	}
	return m, nil
}

// sizeFlag is a byte count written as a plain number or with a unit suffix
// (see bytesize.Parse), or "max" for the wasm32 maximum (4Gi).
type sizeFlag uint64

func (s *sizeFlag) String() string {
	switch n := uint64(*s); {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + "Gi"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + "Mi"
	default:
		return strconv.FormatUint(n, 10)
	}
}

func (s *sizeFlag) Set(v string) error {
	if v == "max" {
		*s = wasm32MaxMemory
		return nil
	}
	if v == "0" {
		return fmt.Errorf("0 would be no bound: give a size, or max for the wasm32 maximum (4Gi)")
	}
	n, err := bytesize.Parse(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// Defaults of `kuasar run`: a guest always runs with bounds, as a container
// does under a runtime's defaults.
const (
	// defaultMemoryLimit is the same as the sandboxer's [wasm]
	// default_memory_limit.
	defaultMemoryLimit = 512 << 20
	// wasm32MaxMemory is all a wasm32 guest can address: --memory max.
	wasm32MaxMemory = 4 << 30
	// defaultOpenFiles is the same as [wasm] default_open_file_limit.
	defaultOpenFiles = 1024
)
