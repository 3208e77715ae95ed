package wasip1

import (
	"context"
	"crypto/rand"
	"io"
	"runtime"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// Guest memory access: a range outside the memory is EFAULT.

func read(mod api.Module, off, n uint32) ([]byte, Errno) {
	b, ok := mod.Memory().Read(off, n)
	if !ok {
		return nil, ErrnoFault
	}
	return b, 0
}

func putU32(mod api.Module, off, v uint32) Errno {
	if !mod.Memory().WriteUint32Le(off, v) {
		return ErrnoFault
	}
	return 0
}

func putU64(mod api.Module, off uint32, v uint64) Errno {
	if !mod.Memory().WriteUint64Le(off, v) {
		return ErrnoFault
	}
	return 0
}

// putStrings writes the NUL-terminated strings in data to buf and a
// pointer to each at ptrs (args_get, environ_get).
func putStrings(mod api.Module, data []byte, count int, ptrs, buf uint32) Errno {
	mem := mod.Memory()
	if _, ok := mem.Read(ptrs, uint32(4*count)); !ok {
		return ErrnoFault
	}
	if !mem.Write(buf, data) {
		return ErrnoFault
	}
	start := 0
	for i := 0; i < count; i++ {
		mem.WriteUint32Le(ptrs+uint32(4*i), buf+uint32(start))
		for data[start] != 0 {
			start++
		}
		start++
	}
	return 0
}

func sizes(mod api.Module, count, size int, countPtr, sizePtr uint32) Errno {
	if e := putU32(mod, countPtr, uint32(count)); e != 0 {
		return e
	}
	return putU32(mod, sizePtr, uint32(size))
}

func argsGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return putStrings(mod, in.args, in.nargs, uint32(s[0]), uint32(s[1]))
}

func argsSizesGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return sizes(mod, in.nargs, len(in.args), uint32(s[0]), uint32(s[1]))
}

func environGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return putStrings(mod, in.env, in.nenv, uint32(s[0]), uint32(s[1]))
}

func environSizesGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	return sizes(mod, in.nenv, len(in.env), uint32(s[0]), uint32(s[1]))
}

// hostClock maps a WASI clock id to the Linux clock; false for ids the
// witx does not define (EINVAL).
func hostClock(id uint32) (int32, bool) {
	switch id {
	case clockRealtime:
		return unix.CLOCK_REALTIME, true
	case clockMonotonic:
		return unix.CLOCK_MONOTONIC, true
	case clockProcessCputime:
		return unix.CLOCK_PROCESS_CPUTIME_ID, true
	case clockThreadCputime:
		return unix.CLOCK_THREAD_CPUTIME_ID, true
	}
	return 0, false
}

// now reads clock id in nanoseconds.
func now(id uint32) (uint64, Errno) {
	c, ok := hostClock(id)
	if !ok {
		return 0, ErrnoInval
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(c, &ts); err != nil {
		return 0, toErrno(err)
	}
	return uint64(ts.Nano()), 0
}

func clockResGet(_ *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	c, ok := hostClock(uint32(s[0]))
	if !ok {
		return ErrnoInval
	}
	var ts unix.Timespec
	if err := unix.ClockGetres(c, &ts); err != nil {
		return toErrno(err)
	}
	return putU64(mod, uint32(s[1]), uint64(ts.Nano()))
}

func clockTimeGet(_ *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	t, e := now(uint32(s[0]))
	if e != 0 {
		return e
	}
	return putU64(mod, uint32(s[2]), t)
}

func randomGet(in *Instance, _ context.Context, mod api.Module, s []uint64) Errno {
	b, e := read(mod, uint32(s[0]), uint32(s[1]))
	if e != 0 {
		return e
	}
	r := in.random
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return ErrnoIo
	}
	return 0
}

// procExit ends the guest with its exit code: the module is closed with
// it and the call unwinds with a sys.ExitError, which Run reports.
func procExit(ctx context.Context, mod api.Module, s []uint64) {
	code := uint32(s[0])
	if in := fromContext(ctx); in != nil {
		in.exitCode = code
	}
	_ = mod.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

// procRaise: preview 1 has no signals to deliver to the guest (wasi-libc
// emulates raise() itself); the function exists so that modules importing
// it link, and reports ENOSYS.
func procRaise(*Instance, context.Context, api.Module, []uint64) Errno {
	return ErrnoNosys
}

func schedYield(*Instance, context.Context, api.Module, []uint64) Errno {
	runtime.Gosched()
	return 0
}

// Sockets: this host gives out no sockets (preview 1 cannot create any and
// kuasar preopens none), so every sock_* function fails on a valid fd with
// ENOTSOCK, on any other with EBADF.

func notSock(in *Instance, fd uint32) Errno {
	if _, e := in.get(fd); e != 0 {
		return e
	}
	return ErrnoNotsock
}

func sockAccept(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	return notSock(in, uint32(s[0]))
}

func sockRecv(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	return notSock(in, uint32(s[0]))
}

func sockSend(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	return notSock(in, uint32(s[0]))
}

func sockShutdown(in *Instance, _ context.Context, _ api.Module, s []uint64) Errno {
	if e := notSock(in, uint32(s[0])); e != ErrnoNotsock {
		return e
	}
	if s[1]&^sdflagsAll != 0 {
		return ErrnoInval
	}
	return ErrnoNotsock
}
