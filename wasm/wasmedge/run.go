//go:build wasmedge

package wasmedge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/kuasar-go/kuasar/internal/fsroot"
	"github.com/kuasar-go/kuasar/wasm"
	"github.com/kuasar-go/kuasar/wasm/internal/wasmbin"
)

// outputDelay bounds how long Run waits, after the child exited, for its
// output to be copied to non-file writers (a descendant holding the pipes
// open would otherwise hold Run forever; WasmEdge guests cannot spawn any).
const outputDelay = 10 * time.Second

// Run implements wasm.Module: the instance runs in a child process of this
// one (see child.go). The child is killed (SIGKILL) when ctx ends, when
// cfg.Timeout passes, and when the thread that started it dies with this
// process (PR_SET_PDEATHSIG), so an instance never outlives its sandboxer.
func (m *Module) Run(ctx context.Context, cfg wasm.RunConfig) (int, error) {
	fn := cfg.Function
	if fn == "" {
		fn = wasm.DefaultFunction
	}
	if _, ok := slices.BinarySearch(m.exports, fn); !ok {
		return 0, fmt.Errorf("module %s exports no function %q (exports: %v): name one of them after '#' in the entrypoint: %w", m.digest, fn, m.exports, errdefs.ErrNotFound)
	}
	if cfg.MemoryLimit > 0 && m.minMem > cfg.MemoryLimit {
		return 0, fmt.Errorf("module %s needs %d bytes of memory to start but the memory limit is %d bytes: raise the limit (--memory, linux.resources.memory.limit): %w: %w",
			m.digest, m.minMem, cfg.MemoryLimit, wasm.ErrOutOfMemory, errdefs.ErrResourceExhausted)
	}
	env, err := wasiEnv(cfg)
	if err != nil {
		return 0, err
	}
	m.engine.mu.Lock()
	closed := m.engine.closed
	m.engine.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("wasmedge engine is closed: %w", errdefs.ErrFailedPrecondition)
	}

	// The pod's budget is charged the module's minimum for the whole run,
	// and the instance may grow only into what the budget had left when it
	// started: a child process's grows cannot be charged one by one.
	if !cfg.MemoryBudget.Reserve(m.minMem) {
		return 0, fmt.Errorf("module %s needs %d bytes of memory to start but its pod has %d of %d bytes left: raise the pod's memory limit: %w: %w",
			m.digest, m.minMem, cfg.MemoryBudget.Limit()-cfg.MemoryBudget.Used(), cfg.MemoryBudget.Limit(), wasm.ErrOutOfMemory, errdefs.ErrResourceExhausted)
	}
	defer cfg.MemoryBudget.Release(m.minMem)
	limit := cfg.MemoryLimit
	if bl := cfg.MemoryBudget.Limit(); bl > 0 {
		avail := bl - min(bl, cfg.MemoryBudget.Used()) + m.minMem
		if limit == 0 || avail < limit {
			limit = avail
		}
	}
	spec := childSpec{File: m.file, Function: fn, Args: cfg.Args, Env: env, Interpreter: m.engine.opts.interpreter, OpenFileLimit: cfg.OpenFileLimit}
	if limit > 0 && limit < 1<<32 {
		spec.MaxPages = max(uint(limit/wasmbin.PageSize), 1)
	}

	// Mount directories are opened here, once (O_PATH, the same way the
	// wazero engine opens its confined roots), and handed to the child as
	// descriptors: WasmEdge preopens /proc/self/fd/N, which is exactly the
	// directory found now whatever happens to the host path later.
	var extra []*os.File
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	specR, specW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("wasmedge run: %w", err)
	}
	extra = append(extra, specR)
	defer specW.Close()
	resR, resW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("wasmedge run: %w", err)
	}
	defer resR.Close()
	extra = append(extra, resW)
	for _, mnt := range cfg.Mounts {
		if !path.IsAbs(mnt.GuestPath) || strings.Contains(mnt.GuestPath, ":") {
			return 0, fmt.Errorf("mount %s: guest path %q must be absolute and free of ':' for wasmedge: %w", mnt.HostPath, mnt.GuestPath, errdefs.ErrInvalidArgument)
		}
		r, err := fsroot.Open(mnt.HostPath)
		if err != nil {
			return 0, fmt.Errorf("mount %s at %s: %w: create the directory or fix the mount source: %w", mnt.HostPath, mnt.GuestPath, err, errdefs.ErrNotFound)
		}
		fd, err := syscall.Dup(r.Fd())
		r.Close()
		if err != nil {
			return 0, fmt.Errorf("mount %s: %w", mnt.HostPath, err)
		}
		extra = append(extra, os.NewFile(uintptr(fd), mnt.HostPath))
		p := path.Clean(mnt.GuestPath) + ":/proc/self/fd/" + strconv.Itoa(childFirstMountFd+len(spec.Preopens)) + "/."
		if mnt.ReadOnly {
			p += ":readonly"
		}
		spec.Preopens = append(spec.Preopens, p)
	}

	cmd := exec.Command(m.engine.childCmd[0], m.engine.childCmd[1:]...)
	cmd.Env = []string{childEnv + "=1"}
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = outputDelay
	var stdinW *os.File
	switch in := cfg.Stdin.(type) {
	case nil:
	case *os.File:
		cmd.Stdin = in
	default:
		// Fed by a goroutine that is not waited for: a reader (a FIFO
		// nobody writes) may block long after the guest ended.
		r, w, err := os.Pipe()
		if err != nil {
			return 0, fmt.Errorf("wasmedge run: %w", err)
		}
		cmd.Stdin = r
		extra = append(extra, r) // closed with the others once started
		stdinW = w
	}
	cmd.Stdout, cmd.Stderr = cfg.Stdout, cfg.Stderr

	// PR_SET_PDEATHSIG fires when the *thread* that forked the child ends:
	// keep this goroutine on its thread until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return 0, fmt.Errorf("start wasmedge child %s: %w: is this a -tags wasmedge build? %w", m.engine.childCmd[0], err, errdefs.ErrUnavailable)
	}
	for _, f := range extra {
		f.Close()
	}
	extra = nil
	if stdinW != nil {
		go func() {
			io.Copy(stdinW, cfg.Stdin)
			stdinW.Close()
		}()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The spec goes after the start so that a child that dies early gives
	// EPIPE here rather than a blocked write.
	if err := json.NewEncoder(specW).Encode(spec); err != nil {
		cmd.Process.Kill()
		<-done
		return 0, fmt.Errorf("wasmedge child: sending its configuration: %w: %w", err, errdefs.ErrUnknown)
	}
	specW.Close()
	if cfg.Started != nil {
		cfg.Started(&childView{pid: cmd.Process.Pid})
	}

	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	}
	defer cancel()
	var waitErr error
	stopped := false
	select {
	case waitErr = <-done:
	case <-runCtx.Done():
		stopped = true
		cmd.Process.Kill()
		waitErr = <-done
	}
	if stopped {
		return killedCode(cfg), nil
	}
	var res childResult
	if err := json.NewDecoder(resR).Decode(&res); err != nil {
		// No result: the child died before reporting (a crash of the
		// engine, or a SIGKILL from outside, such as the OOM killer).
		code := wasm.ExitKilled
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
		return code, fmt.Errorf("wasmedge child of module %s ended without a result (%v): %w", m.digest, waitErr, errdefs.ErrUnknown)
	}
	return res.result(m.digest)
}

func killedCode(cfg wasm.RunConfig) int {
	if cfg.Signal != nil {
		if s := cfg.Signal(); s > 0 {
			return 128 + s
		}
	}
	return wasm.ExitKilled
}

// childView is the wasm.Instance a RunConfig.Started callback gets: the
// child process's resident memory (its linear memory is most of it, but the
// engine's own pages count too: there is no cheaper window into it).
type childView struct{ pid int }

// Pid is the child process's id (task status, tests).
func (v *childView) Pid() int { return v.pid }

// MemoryBytes implements wasm.Instance.
func (v *childView) MemoryBytes() uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(v.pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n * uint64(os.Getpagesize())
}

// wasiEnv checks cfg's environment and working directory and returns the
// guest's environment: WasmEdge has no working directory, so a cwd other
// than "/" is given as PWD (wasi-libc starts in $PWD) unless set already.
func wasiEnv(cfg wasm.RunConfig) ([]string, error) {
	env := slices.Clone(cfg.Env)
	hasPWD := false
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("environment entry %q is not KEY=VALUE: fix process.env / --env: %w", kv, errdefs.ErrInvalidArgument)
		}
		hasPWD = hasPWD || k == "PWD"
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %q is not absolute: %w", cfg.Cwd, errdefs.ErrInvalidArgument)
	}
	if !hasPWD && cwd != "/" {
		env = append(env, "PWD="+path.Clean(cwd))
	}
	return env, nil
}
