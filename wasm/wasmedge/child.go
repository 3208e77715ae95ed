//go:build wasmedge

package wasmedge

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/second-state/WasmEdge-go/wasmedge"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/wasm"
)

// childEnv marks a process started by Module.Run as a WasmEdge child: the
// package's init runs the instance and exits before main ever runs, so any
// binary that links this package (kuasar, kuasar-sandboxer, a test binary)
// can serve as its own child.
const childEnv = "KUASAR_WASMEDGE_CHILD"

// The child's descriptors: 0-2 are the guest's stdio (WasmEdge's WASI uses
// the process's own), then the spec pipe, the result pipe and one O_PATH
// descriptor per mount, in order.
const (
	childSpecFd       = 3
	childResultFd     = 4
	childFirstMountFd = 5
)

// childSpec is what the parent sends the child on childSpecFd.
type childSpec struct {
	File          string   `json:"file"`
	Function      string   `json:"function"`
	Args          []string `json:"args"`
	Env           []string `json:"env"`
	Preopens      []string `json:"preopens"`
	MaxPages      uint     `json:"max_pages,omitempty"`
	Interpreter   bool     `json:"interpreter,omitempty"`
	OpenFileLimit int      `json:"open_file_limit,omitempty"`
}

// childResult is what the child reports on childResultFd before exiting.
type childResult struct {
	Code int `json:"code"`
	// Trap is set when the guest trapped or could not be instantiated.
	Trap string `json:"trap,omitempty"`
	// Invalid is set when the child could not start the run at all.
	Invalid string `json:"invalid,omitempty"`
}

func (r childResult) result(dgst digest.Digest) (int, error) {
	switch {
	case r.Invalid != "":
		return wasm.ExitKilled, fmt.Errorf("wasmedge could not run module %s: %s: %w", dgst, r.Invalid, errdefs.ErrInvalidArgument)
	case r.Trap != "":
		return wasm.ExitKilled, fmt.Errorf("wasm module %s trapped: %s: %w", dgst, r.Trap, errdefs.ErrUnknown)
	}
	return r.Code, nil
}

func init() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	os.Exit(childMain())
}

// childMain runs one instance as the parent's spec says and reports how it
// ended; its exit code is the guest's (the parent reads the report).
func childMain() int {
	res := os.NewFile(childResultFd, "result")
	report := func(r childResult) int {
		json.NewEncoder(res).Encode(r)
		res.Close()
		return r.Code
	}
	var spec childSpec
	specFile := os.NewFile(childSpecFd, "spec")
	err := json.NewDecoder(specFile).Decode(&spec)
	specFile.Close()
	if err != nil {
		return report(childResult{Code: wasm.ExitKilled, Invalid: "reading the run's configuration: " + err.Error()})
	}
	wasmedge.SetLogOff()
	conf := wasmedge.NewConfigure(wasmedge.WASI)
	if spec.MaxPages > 0 {
		conf.SetMaxMemoryPage(spec.MaxPages)
	}
	if spec.Interpreter {
		conf.SetForceInterpreter(true)
	}
	vm := wasmedge.NewVMWithConfig(conf)
	wasi := vm.GetImportModule(wasmedge.WASI)
	wasi.InitWasi(spec.Args, spec.Env, spec.Preopens)
	// WasmEdge opened its own descriptors of the mounts: ours go, so that
	// the open-file limit counts what the guest holds.
	for i := range spec.Preopens {
		unix.Close(childFirstMountFd + i)
	}
	if err := vm.LoadWasmFile(spec.File); err != nil {
		return report(childResult{Code: wasm.ExitKilled, Invalid: "loading " + spec.File + ": " + err.Error()})
	}
	if err := vm.Validate(); err != nil {
		return report(childResult{Code: wasm.ExitKilled, Invalid: "validating: " + err.Error()})
	}
	if err := vm.Instantiate(); err != nil {
		return report(childResult{Code: wasm.ExitKilled, Trap: "instantiating: " + err.Error()})
	}
	if spec.OpenFileLimit > 0 {
		if err := limitOpenFiles(spec.OpenFileLimit, len(spec.Preopens)); err != nil {
			return report(childResult{Code: wasm.ExitKilled, Invalid: err.Error()})
		}
	}
	_, err = vm.Execute(spec.Function)
	code := int(wasi.WasiGetExitCode())
	var r *wasmedge.Result
	if err != nil && !(errors.As(err, &r) && r.GetCode() == errCodeTerminated) {
		return report(childResult{Code: wasm.ExitKilled, Trap: err.Error()})
	}
	// WasmEdge's WASI writes straight to fds 1 and 2 (no buffering of its
	// own), so nothing is left to flush.
	return report(childResult{Code: code})
}

// errCodeTerminated is WasmEdge_ErrCode_Terminated: proc_exit was called.
const errCodeTerminated = 0x01

// limitOpenFiles sets RLIMIT_NOFILE so that the guest can hold n files,
// counting its stdio and preopens as the wazero engine does: the limit is n
// plus whatever the engine itself holds open now beyond those.
func limitOpenFiles(n, preopens int) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("counting open files: %w", err)
	}
	// ReadDir's own descriptor is in the listing but closed again.
	engineOwn := len(ents) - 1 - 3 - preopens - 1 // minus stdio, preopens, the result pipe
	if engineOwn < 0 {
		engineOwn = 0
	}
	// Descriptors are numbered from the lowest free one: the guest's next
	// open gets a number below the limit only if the limit covers every
	// descriptor already taken.
	highest := 0
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(strings.TrimSpace(e.Name()), &fd); err == nil && fd > highest {
			highest = fd
		}
	}
	lim := uint64(max(n+engineOwn+1, highest+1))
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: lim, Max: lim})
}
