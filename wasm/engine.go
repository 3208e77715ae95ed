// Package wasm defines the contract between kuasar-go and a WebAssembly engine.
//
// An Engine compiles module bytes once into a Module; a Module is then run any
// number of times, concurrently, each run getting its own isolated instance
// configured by a RunConfig. The default engine is wazero (package
// github.com/kuasar-go/kuasar/wasm/wazero), which is pure Go and runs inside
// the calling process; other engines (WasmEdge) sit behind build tags.
//
// The package holds only the interface and the plain data types shared by the
// CLI, the sandboxer and the task service, so that none of them depends on a
// particular engine.
package wasm

import (
	"context"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// DefaultFunction is the function a module is started with when an entrypoint
// names none: the WASI command entry point.
const DefaultFunction = "_start"

// ExitKilled is the exit code reported when an instance is stopped from the
// outside without a signal number (context cancelled, engine failure): 128+SIGKILL,
// the same code a killed Linux container reports.
const ExitKilled = 137

// Engine compiles WebAssembly modules. Implementations must be safe for
// concurrent use by many goroutines.
type Engine interface {
	// Name identifies the engine ("wazero", "wasmedge") in logs, metrics and
	// the CLI's --engine flag.
	Name() string

	// Compile validates and compiles module. Compiling the same bytes twice
	// returns the cached result: modules are keyed by their content digest in
	// memory and, where the engine supports it, in an on-disk cache so that a
	// fresh process skips native code generation.
	//
	// A module that is not WebAssembly, is truncated or fails validation gets
	// an error of kind errdefs.ErrInvalidArgument.
	Compile(ctx context.Context, module []byte) (Module, error)

	// Close releases every compiled module and the engine's runtime.
	Close(ctx context.Context) error
}

// Module is a compiled module, ready to be instantiated any number of times.
// Run is safe to call concurrently; each call gets a fresh instance.
type Module interface {
	// Digest is the sha256 digest of the module bytes it was compiled from.
	Digest() digest.Digest

	// MinMemoryBytes is the memory the module asks for at instantiation (its
	// memory section's minimum, in bytes), or 0 when it declares no memory.
	MinMemoryBytes() uint64

	// Exports lists the names of the functions the module exports.
	Exports() []string

	// Run instantiates the module with cfg, calls cfg.Function and returns the
	// guest's exit code. A guest that returns normally from its function exits
	// 0; one that calls proc_exit(n) exits n. When ctx is cancelled or
	// cfg.Timeout passes, the instance is stopped and Run returns ExitKilled
	// (or 128+signal when cfg.Signal reports one) with a nil error.
	//
	// err is non-nil only when the run could not happen or the guest trapped:
	// bad configuration (errdefs.ErrInvalidArgument), a missing function
	// (errdefs.ErrNotFound), a memory minimum over cfg.MemoryLimit
	// (errdefs.ErrResourceExhausted), or a trap (errdefs.ErrUnknown, exit code
	// ExitKilled).
	Run(ctx context.Context, cfg RunConfig) (exitCode int, err error)
}

// Mount makes a host directory visible to the guest at GuestPath.
type Mount struct {
	// HostPath is an absolute directory on the host.
	HostPath string
	// GuestPath is the name the guest sees it under: an absolute path ("/"
	// for the root), or a relative one, as wasmtime's --dir gives: "."
	// is the guest's current directory, which wasi-libc and Go resolve
	// relative paths against, so a guest given "." can list ".". A
	// relative name never starts with "..".
	GuestPath string
	// ReadOnly refuses every write through this mount.
	ReadOnly bool
}

// RunConfig is everything one instance of a module is run with. Its zero value
// runs the default function with no arguments, no environment, no file system
// and discarded stdio.
type RunConfig struct {
	// Function is the exported function to call; empty means DefaultFunction.
	Function string
	// Args is the guest's argv, argv[0] included.
	Args []string
	// Env is the guest's environment as KEY=VALUE strings.
	Env []string
	// Cwd is the guest's working directory; empty means "/".
	Cwd string
	// Mounts are the directories the guest sees. The guest sees nothing else
	// of the host file system.
	Mounts []Mount
	// Stdin, Stdout and Stderr are the guest's standard streams; nil means
	// empty input and discarded output.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// MemoryLimit caps the guest's linear memory in bytes; 0 means the
	// engine's default (4 GiB for wasm32). A module whose minimum memory is
	// above the limit fails with an error naming both figures.
	MemoryLimit uint64
	// MemoryBudget, when set, also bounds the sum of the linear memories of
	// every instance run with the same budget (a pod's limit shared by its
	// containers): a grow past it is refused as one past MemoryLimit is.
	MemoryBudget *MemoryBudget
	// MemoryRefused, when set, is called (on the guest's goroutine) each
	// time a memory.grow of the instance is refused by MemoryLimit or
	// MemoryBudget, with the size in bytes the guest asked to grow to. The
	// guest sees -1 and keeps running; the task service reports an OOM.
	MemoryRefused func(size uint64)
	// OpenFileLimit caps the files the guest holds open at once, counting
	// stdio and its preopened mounts as RLIMIT_NOFILE counts every fd: an
	// open past it fails with EMFILE in the guest. 0 means no per-instance
	// limit (the engine's process-wide budget, if any, still applies and
	// fails opens with ENFILE).
	OpenFileLimit int
	// Timeout stops the instance after this wall-clock time; 0 means none.
	Timeout time.Duration
	// Signal, when set, is consulted after the instance was stopped from the
	// outside: a non-zero signal number makes the exit code 128+signal
	// instead of ExitKilled. The task service sets it from Kill requests.
	Signal func() int
	// Started, when set, is called once the instance exists and before its
	// function runs, with a view of the live instance that the caller may
	// poll for figures (task Stats, sandbox Metrics) until Run returns.
	Started func(Instance)
	// Blocking, when set, is called on the guest's goroutine before the
	// guest waits for its stdin or in poll_oneoff (a sleep, a timer, a
	// wait for input; 1 ms or longer), and the function it returns once the
	// wait ended: the task service releases the OS thread it locked for
	// CPU accounting while the guest idles, so that an idle guest holds a
	// parked goroutine and no thread.
	Blocking func() (resume func())
}

// Instance is a live instance of a Module, as seen by RunConfig.Started.
type Instance interface {
	// MemoryBytes is the current size of the instance's linear memory.
	MemoryBytes() uint64
}
