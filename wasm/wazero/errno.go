package wazero

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// wazero's file-system interface reports errors as experimental/sys.Errno,
// a closed set without EMFILE and ENFILE, and its WASI layer turns every
// errno outside that set into EIO. A guest out of file descriptors would see
// "I/O error", and a program that handles EMFILE (waits, closes, retries)
// would take it for a broken disk. The two pieces below carry those errnos
// past wazero: confinedFS notes the host errno of a failed operation in the
// run's hostErrno, and a listener on the WASI path_* functions rewrites
// their EIO result to the WASI errno the note asks for. Each instance runs
// on one goroutine, so the note of a run is only ever read right after the
// call that wrote it.

// WASI preview 1 errno values (wasi_snapshot_preview1 "errno").
const (
	wasiErrnoIo    = 29
	wasiErrnoMfile = 33
	wasiErrnoNfile = 41
)

// hostErrno is the errno of the last failed file-system operation of one
// run that wazero cannot express (0 when none).
type hostErrno struct{ v atomic.Uint32 }

// note records err's errno if it is one wazero would turn into EIO.
func (h *hostErrno) note(err error) {
	if h == nil {
		return
	}
	switch {
	case errors.Is(err, unix.EMFILE):
		h.v.Store(wasiErrnoMfile)
	case errors.Is(err, unix.ENFILE):
		h.v.Store(wasiErrnoNfile)
	}
}

type hostErrnoKey struct{}

// withHostErrno returns ctx carrying h for the run's file systems and the
// errno listener.
func withHostErrno(ctx context.Context, h *hostErrno) context.Context {
	return context.WithValue(ctx, hostErrnoKey{}, h)
}

func hostErrnoFrom(ctx context.Context) *hostErrno {
	h, _ := ctx.Value(hostErrnoKey{}).(*hostErrno)
	return h
}

// errnoListener rewrites EIO from a WASI path_* function to the errno the
// run's hostErrno holds.
type errnoListener struct{}

// Before implements experimental.FunctionListener: a new call starts with a
// clean note.
func (errnoListener) Before(ctx context.Context, _ api.Module, _ api.FunctionDefinition, _ []uint64, _ experimental.StackIterator) {
	if h := hostErrnoFrom(ctx); h != nil {
		h.v.Store(0)
	}
}

// After implements experimental.FunctionListener. results is the live
// stack of the host call in both wazero engines, result first (the
// compiler passes the whole parameter area, hence len >= 1), so the guest
// sees the rewritten errno; TestEMFILEReachesGuest checks both engines.
func (errnoListener) After(ctx context.Context, _ api.Module, _ api.FunctionDefinition, results []uint64) {
	h := hostErrnoFrom(ctx)
	if h == nil || len(results) == 0 || results[0] != wasiErrnoIo {
		return
	}
	if e := h.v.Swap(0); e != 0 {
		results[0] = uint64(e)
	}
}

// Abort implements experimental.FunctionListener.
func (errnoListener) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

// withErrnoListener returns ctx with the listener factory for instantiating
// a WASI host module: every path_* function (they resolve names and open
// descriptors, so they can run out of them) gets errnoListener; other
// functions get none and run at full speed.
func withErrnoListener(ctx context.Context) context.Context {
	return experimental.WithFunctionListenerFactory(ctx, experimental.FunctionListenerFactoryFunc(
		func(def api.FunctionDefinition) experimental.FunctionListener {
			if strings.HasPrefix(def.Name(), "path_") {
				return errnoListener{}
			}
			return nil
		}))
}
