package wasmtask

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/core/events"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kuasar-go/kuasar/wasm"
)

// ModuleResolver finds a container's Wasm module outside its rootfs: in the
// wasm layers of its image, read from containerd's content store. It returns
// an error of kind errdefs.ErrNotFound when the image holds no module.
type ModuleResolver interface {
	// ResolveModule returns the module bytes of container containerID in
	// namespace ns, and the function its image's entrypoint names ("" for
	// the default).
	ResolveModule(ctx context.Context, ns, containerID string) (module []byte, function string, err error)
}

// SpecMapper turns a container's OCI runtime spec and its mounted rootfs
// into the module file to run and the instance configuration. The default is
// wasm/runspec's FromSpec.
type SpecMapper func(spec *specs.Spec, rootfs string) (modulePath, function string, cfg wasm.RunConfig, err error)

// Option configures a Service.
type Option func(*config)

type config struct {
	engine      wasm.Engine
	publisher   events.Publisher
	resolver    ModuleResolver
	mapper      SpecMapper
	sandboxID   string
	namespace   string
	pid         uint32
	memoryLimit uint64
	stateFile   string
	modules     *ModuleCache

	defaultMemoryLimit uint64
	defaultOpenFiles   int
}

func defaultConfig() config {
	// No mapper: runspec's, through FromSpecOpen (Service.module).
	return config{pid: uint32(os.Getpid())}
}

// WithEngine sets the engine modules are compiled and run with (required).
func WithEngine(e wasm.Engine) Option { return func(c *config) { c.engine = e } }

// WithPublisher sets where task events (/tasks/create, /tasks/exit, ...) go;
// without it they are dropped. The service publishes through an ordered,
// non-blocking queue.
func WithPublisher(p events.Publisher) Option { return func(c *config) { c.publisher = p } }

// WithModuleResolver sets the fallback used when a container's rootfs holds
// no module: typically the image's wasm layers in containerd's content store.
func WithModuleResolver(r ModuleResolver) Option { return func(c *config) { c.resolver = r } }

// WithSpecMapper replaces the OCI-spec-to-RunConfig mapping (tests, engines
// with their own conventions).
func WithSpecMapper(m SpecMapper) Option { return func(c *config) { c.mapper = m } }

// WithSandbox names the sandbox the service belongs to, for logs, and the
// namespace used when a request carries none.
func WithSandbox(id, namespace string) Option {
	return func(c *config) { c.sandboxID, c.namespace = id, namespace }
}

// WithPid sets the pid reported for every task and exec of the service.
// Wasm instances are goroutines of the hosting process, not processes: the
// default is that process's pid (the sandboxer's), which is stable for the
// sandbox's life and names the process that really runs the guests.
func WithPid(pid uint32) Option { return func(c *config) { c.pid = pid } }

// WithMemoryLimit is the sandbox's memory limit: it caps every instance's
// linear memory (a container's own limit from its spec applies when lower)
// and the sum of all of them, so that a grow past what the sandbox's
// instances hold together is refused. 0 means neither cap; containers
// without a limit then get WithDefaultMemoryLimit's.
func WithMemoryLimit(bytes uint64) Option { return func(c *config) { c.memoryLimit = bytes } }

// WithDefaultMemoryLimit caps the linear memory of a container whose spec
// and sandbox set no memory limit ([wasm] default_memory_limit). 0 leaves
// such containers to the engine's bound (4 GiB for wasm32).
func WithDefaultMemoryLimit(bytes uint64) Option {
	return func(c *config) { c.defaultMemoryLimit = bytes }
}

// WithDefaultOpenFileLimit caps the open files of a container whose spec has
// no RLIMIT_NOFILE ([wasm] default_open_file_limit). 0 means no cap beyond
// the engine's budget.
func WithDefaultOpenFileLimit(n int) Option {
	return func(c *config) { c.defaultOpenFiles = n }
}

// WithModuleCache shares c, a cache of the modules compiled from module
// files, with other services on the same engine; without it each service
// keeps its own.
func WithModuleCache(c *ModuleCache) Option { return func(cfg *config) { cfg.modules = c } }

// WithStateFile makes the service keep its task records (ids, bundles,
// mounted rootfs directories) in path, rewritten atomically after every
// create and delete, so that a restarted host can report and clean up the
// tasks it lost (see LoadRecords and Restore).
func WithStateFile(path string) Option { return func(c *config) { c.stateFile = path } }
