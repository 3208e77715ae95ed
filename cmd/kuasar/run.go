package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"

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
	invoke    string // --invoke: the export to call instead of _start
	target    string
	args      []string // nil: the image's default args
}

// runLong is the body of `kuasar run --help`.
const runLong = `Runs TARGET in the sandbox it asks for and exits with its exit code.

TARGET is one of:
  FILE.wasm             a WebAssembly module (recognised by its \0asm header);
                        FILE.wasm#FUNC, or --invoke FUNC, calls export FUNC
                        instead of _start
  REGISTRY/REPO:TAG     an OCI image reference, pulled into the local store
                        when it is not there yet (ghcr.io/org/app:v1)
  NAME                  an image already in the local store ('kuasar images')
  DIR | FILE.tar[:NAME] an OCI image layout directory or OCI archive
Wasm images run in-process (wazero); Linux images in a micro-VM
(--isolation vm) or Quark. ARGS replace the image's default arguments;
argv[0] stays the module's name. Flags end at TARGET: what follows is the
guest's.

Directories (as wasmtime's --dir, and docker's -v):
  --dir DIR             DIR under the same name: --dir . gives the guest the
                        host's current directory as its ".", so 'ls .' works
  --dir HOST::GUEST     HOST under the name GUEST (/data, or a relative name)
  -v HOST:GUEST[:ro]    HOST at the absolute GUEST path, read-only with :ro
                        (--dir HOST:GUEST[:ro] is the same)

Sizes (--memory, --max-layer-size) are bytes or a number with a unit, as
Kubernetes writes them: Ki, Mi, Gi, Ti are powers of 1024 (64Mi = 67108864);
K, M, G, T are powers of 1000 (64M = 64000000, as Kubernetes, where docker
would read 64 MiB). Lower-case k, m, g, t are refused: docker reads m as MiB,
Kubernetes as milli.

Exit codes:
  0-255  the guest's own exit status (WASI proc_exit, or the VM process's)
  125    kuasar could not run the workload (bad flag, bad module or image,
         no such file, engine failure before the guest started)
  127    the module has no such function (FILE.wasm#FUNC, --invoke)
  130    kuasar was interrupted (SIGINT; 143 for SIGTERM): 128 + signal
  137    the guest was killed: --timeout, a trap, memory exhausted, SIGKILL`

// runExample is the example section of `kuasar run --help`.
const runExample = `  kuasar run hello.wasm
  kuasar run app.wasm -- --verbose input.txt
  kuasar run --dir . app.wasm ls .
  kuasar run --dir ./data::/data -e LEVEL=debug -m 64Mi app.wasm
  kuasar run reactor.wasm#greet          # or: --invoke greet reactor.wasm
  kuasar run ghcr.io/org/app:v1
  kuasar run --isolation vm -m 256Mi docker.io/library/busybox:latest -- echo hi`

// newRunCommand builds `kuasar run`.
func (c *cli) newRunCommand() *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:         "run [flags] TARGET [-- ARGS...]",
		Short:       "Run a .wasm module or an image in the sandbox it asks for",
		Long:        runLong,
		Example:     runExample,
		GroupID:     "run",
		Annotations: map[string]string{annotationUsageExit: strconv.Itoa(exitKuasarError)},
		Args:        minArgs(1, "missing TARGET: give a .wasm file, an image reference or a local image"),
		RunE: c.action(func(cmd *cobra.Command, args []string) int {
			if code, ok := o.finish(c.env, args); !ok {
				return code
			}
			return runCommand(c.ctx, c.env, o)
		}),
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false) // flags end at TARGET: the rest is the guest's
	fs.Var(&o.dirs, "dir", "give the guest host directory DIR under the same name (--dir . is the guest's \".\"), or HOST::GUEST under the name GUEST; repeatable")
	fs.VarP(&volumeFlag{&o.dirs}, "volume", "v", "bind HOST at the absolute guest path GUEST, read-only with :ro (docker's -v); repeatable")
	fs.VarP(&o.envs, "env", "e", "set KEY=VALUE in the guest's environment (KEY alone copies kuasar's); repeatable")
	fs.VarP(&o.memory, "memory", "m", "cap the guest's memory: bytes or 64Mi, 512M, 1Gi (see Sizes); Wasm default 512Mi, max = the wasm32 maximum (4Gi)")
	fs.IntVar(&o.openFiles, "open-files", defaultOpenFiles, "most files the guest may hold open, stdio and --dir mounts included (its RLIMIT_NOFILE); past it opens fail with EMFILE")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop the guest after this long (exit code 137), e.g. 500ms, 10s; 0 means never")
	fs.StringVar(&o.isolation, "isolation", "auto", "the `KIND` of sandbox: auto (the image decides), wasm, vm or quark")
	fs.StringVar(&o.engine, "engine", wazero.EngineName, "the Wasm `ENGINE`: "+strings.Join(engineNames(), " or "))
	fs.StringVar(&o.invoke, "invoke", "", "call export `FUNC` instead of _start (as TARGET#FUNC)")
	fs.StringVarP(&o.workdir, "workdir", "w", "", "the guest's working directory, an absolute `PATH` (default: the image's, else /)")
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "talk plain HTTP to registries (local test registries only)")
	o.images.register(fs)
	fs.StringVar(&o.vmTmpl, "vm-template", "", "vm isolation: auto restores the VM from a template (built on the first run) when one fits, off always boots it (default: [hypervisor.NAME] template, else auto)")
	fs.BoolP("interactive", "i", true, "accepted for docker's -i: the guest always reads kuasar's stdin")
	fs.BoolP("tty", "t", false, "accepted for docker's -t: the guest sees a terminal when kuasar's stdio is one")
	cmd.RegisterFlagCompletionFunc("isolation", cobra.FixedCompletions([]string{"auto", "wasm", "vm", "quark"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("engine", cobra.FixedCompletions(engineNames(), cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("vm-template", cobra.FixedCompletions([]string{"auto", "off"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("dir", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	})
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault // the guest's arguments
		}
		return []string{"wasm"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return cmd
}

// finish takes TARGET and the guest's arguments from args and checks what
// the flags cannot check alone.
func (o *runOptions) finish(env *cliEnv, args []string) (int, bool) {
	o.target = args[0]
	rest := args[1:]
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
		o.args = []string{} // "--" with nothing after still clears the default args
	}
	if len(rest) > 0 {
		o.args = rest
	}
	if o.openFiles < 1 {
		fmt.Fprintf(env.stderr, "kuasar run: --open-files %d: give a positive count (default %d)\n", o.openFiles, defaultOpenFiles)
		return exitKuasarError, false
	}
	if o.timeout < 0 {
		fmt.Fprintf(env.stderr, "kuasar run: --timeout %v is negative\n", o.timeout)
		return exitKuasarError, false
	}
	return 0, true
}

// runCommand runs the workload o names and returns kuasar's exit code.
func runCommand(ctx context.Context, env *cliEnv, o *runOptions) int {
	fail := func(err error) int {
		fmt.Fprintf(env.stderr, "kuasar run: %v\n", err)
		return exitKuasarError
	}
	log.G(ctx).Debug("run: command")
	// Guest paths are resolved with openat2(2); no unsafe fallback.
	if err := fsroot.Check(); err != nil {
		return fail(err)
	}
	iso, err := images.ParseIsolation(o.isolation)
	if err != nil {
		return fail(fmt.Errorf("--isolation: %w", err))
	}
	t0 := time.Now()
	wl, err := resolveTarget(ctx, env, o)
	if err != nil {
		return fail(err)
	}
	log.G(ctx).WithField("took", time.Since(t0)).Debug("run: workload resolved")
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
	if o.invoke != "" {
		if wl.Function != "" && wl.Function != o.invoke {
			return wasm.RunConfig{}, fmt.Errorf("--invoke %s and %s name different functions: give one: %w", o.invoke, wl.Reference, errdefs.ErrInvalidArgument)
		}
		function = o.invoke
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

// engineNames lists the --engine names this build offers, sorted.
func engineNames() []string {
	var names []string
	for n := range engineFactories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
func (l *listFlag) Type() string       { return "KEY=VALUE" }

// dirFlag is the repeatable --dir: wasmtime's DIR and HOST::GUEST, and
// docker's HOST:GUEST[:ro].
type dirFlag []wasm.Mount

func (d *dirFlag) String() string {
	var s []string
	for _, m := range *d {
		s = append(s, m.HostPath+"::"+m.GuestPath)
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

func (d *dirFlag) Type() string { return "DIR" }

// volumeFlag is -v/--volume: docker's HOST:GUEST[:ro|rw], into the same
// list as --dir.
type volumeFlag struct{ dirs *dirFlag }

func (v *volumeFlag) String() string { return "" }

func (v *volumeFlag) Set(s string) error {
	if !strings.Contains(s, ":") || strings.Contains(s, "::") {
		return fmt.Errorf("%q: want HOST:GUEST[:ro] with an absolute GUEST (or use --dir %s)", s, s)
	}
	m, err := parseVolume(s)
	if err != nil {
		return err
	}
	*v.dirs = append(*v.dirs, m)
	return nil
}

func (v *volumeFlag) Type() string { return "HOST:GUEST[:ro]" }

// parseDir reads a --dir value as wasmtime does: DIR gives the guest the
// host directory DIR under the same name, HOST::GUEST under the name
// GUEST. A relative name stays relative, as the guest's preopen name: "."
// is the guest's current directory (wasi-libc and Go resolve relative
// paths against it), so --dir . lets the guest 'ls .'. Docker's
// HOST:GUEST[:ro] is taken too (see parseVolume).
func parseDir(v string) (wasm.Mount, error) {
	host, guest, wasmtime := strings.Cut(v, "::")
	if !wasmtime {
		if strings.Contains(v, ":") {
			return parseVolume(v)
		}
		host, guest = v, v
	}
	if host == "" || guest == "" {
		return wasm.Mount{}, fmt.Errorf("%q: want DIR or HOST::GUEST", v)
	}
	name, err := guestName(guest)
	if err != nil {
		return wasm.Mount{}, fmt.Errorf("%q: %w", v, err)
	}
	return hostDir(v, host, name, false)
}

// guestName checks and cleans the name a --dir directory gets in the
// guest: an absolute path, or a relative one that stays below the guest's
// current directory ("." itself, "data").
func guestName(g string) (string, error) {
	if path.IsAbs(g) {
		return path.Clean(g), nil
	}
	c := path.Clean(g)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("the guest name %q leaves the guest's current directory: write HOST::/NAME for an absolute one", g)
	}
	return c, nil
}

// parseVolume reads docker's HOST:GUEST[:ro|rw]; GUEST must be absolute.
func parseVolume(v string) (wasm.Mount, error) {
	parts := strings.Split(v, ":")
	ro := false
	switch last := parts[len(parts)-1]; {
	case len(parts) > 1 && last == "ro":
		ro = true
		parts = parts[:len(parts)-1]
	case len(parts) > 1 && last == "rw":
		parts = parts[:len(parts)-1]
	}
	if len(parts) == 1 { // DIR:ro
		name, err := guestName(parts[0])
		if err != nil {
			return wasm.Mount{}, fmt.Errorf("%q: %w", v, err)
		}
		return hostDir(v, parts[0], name, ro)
	}
	if len(parts) != 2 || parts[0] == "" {
		return wasm.Mount{}, fmt.Errorf("%q: want HOST:GUEST[:ro]", v)
	}
	if !path.IsAbs(parts[1]) {
		return wasm.Mount{}, fmt.Errorf("%q: the guest path %q must be absolute (or give it a relative name with --dir HOST::%s)", v, parts[1], parts[1])
	}
	return hostDir(v, parts[0], path.Clean(parts[1]), ro)
}

// hostDir resolves the host side of a --dir or -v value and checks that it
// is a directory.
func hostDir(v, host, guest string, ro bool) (wasm.Mount, error) {
	abs, err := filepath.Abs(host)
	if err != nil {
		return wasm.Mount{}, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return wasm.Mount{}, fmt.Errorf("%q: %w", v, err)
	}
	if !st.IsDir() {
		return wasm.Mount{}, fmt.Errorf("%q: %s is not a directory", v, abs)
	}
	return wasm.Mount{HostPath: abs, GuestPath: guest, ReadOnly: ro}, nil
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

func (s *sizeFlag) Type() string { return "size" }

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
