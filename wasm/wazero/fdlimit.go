package wazero

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/wasm/internal/wasip1"
)

// Open files are limited twice: per instance (RunConfig.OpenFileLimit, the
// container's RLIMIT_NOFILE), where the guest gets EMFILE, and per engine
// (WithOpenFileBudget, what the hosting process can spare), where it gets
// ENFILE, so that one guest cannot take the file descriptors the sandboxer
// needs for its own API and for other tenants.
//
// With kuasar's WASI host (the default) the host counts itself: openFiles
// is its wasip1.Files, every path_open and every preopen (from the guest's
// first use of it) counts until closed, and EMFILE/ENFILE are errnos the
// host returns as they are.
//
// With wazero's WASI host (WithWazeroWASI), counting is done by a
// file-system wrapper (limitFS) around each mount:
// a file counts from a successful OpenFile until its Close. wazero's errno
// type has no EMFILE or ENFILE (it reports both as EIO), so the wrapper
// fails the open with EIO and records the real reason, and the WASI path_*
// calls are wrapped to return it instead. The mount's file system
// (confinedFS) records the same way when the host itself runs out of
// descriptors: every path operation opens fds while it resolves the path.

// WASI preview 1 errno values (wasi_snapshot_preview1 "errno" enum).
const (
	wasiEMFILE = 33
	wasiENFILE = 41
	wasiEIO    = 29
	wasiEBADF  = 8
)

// stdioFiles are the guest's stdin, stdout and stderr, which count against
// its open-file limit as they do against RLIMIT_NOFILE.
const stdioFiles = 3

// WithOpenFileBudget bounds the files all instances of the engine hold open
// together: past it an open fails with ENFILE in the guest. 0 (the default)
// means no engine-wide bound. The sandboxer sets it to its RLIMIT_NOFILE
// minus a reserve for its own sockets and files.
func WithOpenFileBudget(n int) Option {
	return func(o *options) { o.fileBudget = n }
}

// fileBudget counts the files every instance of an engine holds open.
type fileBudget struct {
	limit int64 // 0: none
	used  atomic.Int64
}

func (b *fileBudget) reserve() bool {
	if b.limit <= 0 {
		b.used.Add(1)
		return true
	}
	if b.used.Add(1) > b.limit {
		b.used.Add(-1)
		return false
	}
	return true
}

func (b *fileBudget) release(n int64) { b.used.Add(-n) }

// OpenFiles is the number of files the engine's instances hold open now
// (files opened through their mounts, preopened directories included).
func (e *engine) OpenFiles() int { return int(e.files.used.Load()) }

// openFiles counts one instance's open files against its limit and the
// engine's budget.
type openFiles struct {
	engine *fileBudget
	limit  int // including stdio; 0: none

	mu      sync.Mutex
	open    int    // opened through a mount and not closed yet
	refused uint64 // WASI errno of the last refused open, 0 if none
	done    bool
}

func newOpenFiles(engine *fileBudget, limit int) *openFiles {
	return &openFiles{engine: engine, limit: limit}
}

// acquire counts one more open file, or refuses it and records why.
func (o *openFiles) acquire() experimentalsys.Errno {
	switch o.take() {
	case 0:
		return 0
	case wasiEBADF:
		return experimentalsys.EBADF
	}
	return experimentalsys.EIO
}

// take counts one more open file, or refuses it with the WASI errno that
// says why (EMFILE, ENFILE; EBADF once the run ended), which it records.
func (o *openFiles) take() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.done:
		return wasiEBADF
	case o.limit > 0 && stdioFiles+o.open >= o.limit:
		o.refused = wasiEMFILE
		return wasiEMFILE
	case !o.engine.reserve():
		o.refused = wasiENFILE
		return wasiENFILE
	}
	o.open++
	return 0
}

// Acquire implements wasip1.Files.
func (o *openFiles) Acquire() wasip1.Errno { return wasip1.Errno(o.take()) }

// Release implements wasip1.Files.
func (o *openFiles) Release() { o.release() }

// release uncounts one file. After finish it does nothing: finish already
// refunded everything.
func (o *openFiles) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done || o.open == 0 {
		return
	}
	o.open--
	o.engine.release(1)
}

// noteHost records EMFILE or ENFILE when err, from a host call made for
// the guest, is one of them, so that the guest sees it instead of EIO. o
// may be nil (a mount used outside a run).
func (o *openFiles) noteHost(err error) {
	if o == nil {
		return
	}
	var r uint64
	switch {
	case errors.Is(err, unix.EMFILE):
		r = wasiEMFILE
	case errors.Is(err, unix.ENFILE):
		r = wasiENFILE
	default:
		return
	}
	o.mu.Lock()
	o.refused = r
	o.mu.Unlock()
}

// takeRefusal returns and clears the reason of the last refused open.
func (o *openFiles) takeRefusal() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.refused
	o.refused = 0
	return r
}

// finish refunds whatever the instance still holds, when its run ends: a
// failed instantiation may never close what it opened.
func (o *openFiles) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return
	}
	o.done = true
	o.engine.release(int64(o.open))
	o.open = 0
}

// wrap makes fsys count its opened files.
func (o *openFiles) wrap(fsys experimentalsys.FS) experimentalsys.FS {
	return &limitFS{FS: fsys, files: o}
}

// checkOpenFileLimit refuses a limit that cannot even hold stdio and the
// preopened mounts.
func checkOpenFileLimit(limit, mounts int) error {
	if limit < 0 || (limit > 0 && limit < stdioFiles+mounts) {
		return fmt.Errorf("open file limit %d cannot hold the guest's stdio and its %d mounts: allow at least %d (process.rlimits RLIMIT_NOFILE, --open-files): %w", limit, mounts, stdioFiles+mounts, errdefs.ErrInvalidArgument)
	}
	return nil
}

// limitFS is a mount whose opened files are counted.
type limitFS struct {
	experimentalsys.FS
	files *openFiles
}

// OpenFile implements experimentalsys.FS.
func (l *limitFS) OpenFile(path string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if errno := l.files.acquire(); errno != 0 {
		return nil, errno
	}
	f, errno := l.FS.OpenFile(path, flag, perm)
	if errno != 0 {
		l.files.release()
		return nil, errno
	}
	lf := &limitFile{File: f, files: l.files}
	if pf, ok := f.(experimentalsys.PollableFile); ok {
		return &limitPollableFile{limitFile: lf, p: pf}, 0
	}
	return lf, 0
}

// limitFile is an open file that is uncounted when closed.
type limitFile struct {
	experimentalsys.File
	files  *openFiles
	closed atomic.Bool
}

// Close implements experimentalsys.File.
func (f *limitFile) Close() experimentalsys.Errno {
	if f.closed.Swap(true) {
		return 0
	}
	errno := f.File.Close()
	f.files.release()
	return errno
}

// limitPollableFile keeps the non-blocking and poll support of the file it
// wraps visible to wazero.
type limitPollableFile struct {
	*limitFile
	p experimentalsys.PollableFile
}

// IsNonblock implements experimentalsys.PollableFile.
func (f *limitPollableFile) IsNonblock() bool { return f.p.IsNonblock() }

// SetNonblock implements experimentalsys.PollableFile.
func (f *limitPollableFile) SetNonblock(enable bool) experimentalsys.Errno {
	return f.p.SetNonblock(enable)
}

// Poll implements experimentalsys.Pollable.
func (f *limitPollableFile) Poll(flag experimentalsys.Pflag, timeoutMillis int32) (bool, experimentalsys.Errno) {
	return f.p.Poll(flag, timeoutMillis)
}

// refusalText explains a refused open.
func refusalText(errno uint64) string {
	if errno == wasiEMFILE {
		return "its open-file limit is reached (EMFILE)"
	}
	return "the runtime's open-file budget for all guests is spent (ENFILE): other guests hold too many files, or raise RLIMIT_NOFILE / lower [sandboxer] fd_reserve"
}

// openFilesKey carries a run's openFiles in the context its host calls get.
type openFilesKey struct{}

// wasiHostModule builds the WASI preview 1 host module under name, with
// every path_* function wrapped so that a call refused for lack of file
// descriptors returns EMFILE or ENFILE instead of EIO.
func wasiHostModule(ctx context.Context, r wazero.Runtime, name string) (wazero.HostModuleBuilder, error) {
	// The stock functions, read from a compiled (never instantiated) copy.
	probe := r.NewHostModuleBuilder(name)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(probe)
	cm, err := probe.Compile(ctx)
	if err != nil {
		return nil, fmt.Errorf("compile WASI host module: %w", err)
	}
	defer cm.Close(ctx)
	b := r.NewHostModuleBuilder(name)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	wrapped := 0
	for fn, def := range cm.ExportedFunctions() {
		if !strings.HasPrefix(fn, "path_") {
			continue
		}
		orig, ok := def.GoFunction().(api.GoModuleFunction)
		if !ok {
			return nil, fmt.Errorf("wazero's %s is a %T, not a Go module function: %w", fn, def.GoFunction(), errdefs.ErrNotImplemented)
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(errnoRestoring{orig}, def.ParamTypes(), def.ResultTypes()).
			WithParameterNames(def.ParamNames()...).
			WithResultNames(def.ResultNames()...).
			Export(fn)
		wrapped++
	}
	if wrapped == 0 {
		return nil, fmt.Errorf("wazero's WASI module has no path_* functions: %w", errdefs.ErrNotImplemented)
	}
	return b, nil
}

// errnoRestoring is a WASI path_* function that reports EMFILE/ENFILE for
// calls a limit or the host's descriptor table refused.
type errnoRestoring struct{ orig api.GoModuleFunction }

// Call implements api.GoModuleFunction.
func (p errnoRestoring) Call(ctx context.Context, mod api.Module, stack []uint64) {
	files, _ := ctx.Value(openFilesKey{}).(*openFiles)
	if files == nil {
		p.orig.Call(ctx, mod, stack)
		return
	}
	files.takeRefusal()
	p.orig.Call(ctx, mod, stack)
	if r := files.takeRefusal(); r != 0 && stack[0] == wasiEIO {
		stack[0] = r
	}
}
