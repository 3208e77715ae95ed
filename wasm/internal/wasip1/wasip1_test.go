package wasip1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// errnoCase is one call (or a few) and the errno the witx asks for.
type errnoCase struct {
	name  string
	setup func(e *env)
	do    func(e *env) Errno
	want  Errno
	check func(t *testing.T, e *env)
}

func runCases(t *testing.T, cases []errnoCase, opts ...envOpt) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, opts...)
			if tc.setup != nil {
				tc.setup(e)
			}
			if got := tc.do(e); got != tc.want {
				t.Fatalf("errno %d, want %d", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}
}

const (
	rFile = rightsFile
	rRead = RightFdRead | RightFdSeek | RightFdTell | RightFdFilestatGet | RightPollFdReadwrite
	rRW   = rRead | RightFdWrite | RightFdFilestatSetSize | RightFdAllocate | RightFdDatasync | RightFdSync
)

func TestArgsEnviron(t *testing.T) {
	runCases(t, []errnoCase{
		{name: "args_sizes_get counts argv[0] and NULs", do: func(e *env) Errno { return e.call("args_sizes_get", resPtr, resPtr+4) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != 2 || e.u32(resPtr+4) != uint32(len("prog\x00a b\x00")) {
				t.Errorf("argc %d size %d", e.u32(resPtr), e.u32(resPtr+4))
			}
		}},
		{name: "args_get pointers and strings", do: func(e *env) Errno { return e.call("args_get", resPtr, bufPtr) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != bufPtr || e.u32(resPtr+4) != bufPtr+5 || string(e.bytes(bufPtr, 9)) != "prog\x00a b\x00" {
				t.Errorf("argv %d %d %q", e.u32(resPtr), e.u32(resPtr+4), e.bytes(bufPtr, 9))
			}
		}},
		{name: "args_get out of memory is EFAULT", do: func(e *env) Errno { return e.call("args_get", resPtr, 65536-3) }, want: ErrnoFault},
		{name: "environ_sizes_get", do: func(e *env) Errno { return e.call("environ_sizes_get", resPtr, resPtr+4) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != 1 || e.u32(resPtr+4) != 4 {
				t.Errorf("count %d size %d", e.u32(resPtr), e.u32(resPtr+4))
			}
		}},
		{name: "environ_get", do: func(e *env) Errno { return e.call("environ_get", resPtr, bufPtr) }, check: func(t *testing.T, e *env) {
			if string(e.bytes(bufPtr, 4)) != "K=V\x00" {
				t.Errorf("environ %q", e.bytes(bufPtr, 4))
			}
		}},
	})
}

func TestClockRandomSchedProc(t *testing.T) {
	runCases(t, []errnoCase{
		{name: "clock_time_get realtime", do: func(e *env) Errno { return e.call("clock_time_get", clockRealtime, 1, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u64(resPtr) < 1_600_000_000e9 {
				t.Errorf("realtime %d", e.u64(resPtr))
			}
		}},
		{name: "clock_time_get monotonic", do: func(e *env) Errno { return e.call("clock_time_get", clockMonotonic, 1, resPtr) }},
		{name: "clock_time_get process cputime", do: func(e *env) Errno { return e.call("clock_time_get", clockProcessCputime, 1, resPtr) }},
		{name: "clock_time_get thread cputime", do: func(e *env) Errno { return e.call("clock_time_get", clockThreadCputime, 1, resPtr) }},
		{name: "clock_time_get unknown clock", do: func(e *env) Errno { return e.call("clock_time_get", 4, 1, resPtr) }, want: ErrnoInval},
		{name: "clock_res_get monotonic", do: func(e *env) Errno { return e.call("clock_res_get", clockMonotonic, resPtr) }, check: func(t *testing.T, e *env) {
			if r := e.u64(resPtr); r == 0 || r > 1e9 {
				t.Errorf("resolution %d", r)
			}
		}},
		{name: "clock_res_get unknown clock", do: func(e *env) Errno { return e.call("clock_res_get", 99, resPtr) }, want: ErrnoInval},
		{name: "clock_time_get out of memory", do: func(e *env) Errno { return e.call("clock_time_get", 0, 1, 65536-4) }, want: ErrnoFault},
		{name: "random_get fills", do: func(e *env) Errno { return e.call("random_get", bufPtr, 64) }, check: func(t *testing.T, e *env) {
			if strings.Count(string(e.bytes(bufPtr, 64)), "\x00") > 16 {
				t.Errorf("random bytes %x", e.bytes(bufPtr, 64))
			}
		}},
		{name: "random_get out of memory", do: func(e *env) Errno { return e.call("random_get", 65530, 64) }, want: ErrnoFault},
		{name: "sched_yield", do: func(e *env) Errno { return e.call("sched_yield") }},
		// The witx keeps proc_raise; no engine delivers signals to a guest.
		{name: "proc_raise", do: func(e *env) Errno { return e.call("proc_raise", 6) }, want: ErrnoNosys},
	})
}

func TestProcExit(t *testing.T) {
	e := newEnv(t)
	_, err := e.mod.ExportedFunction("proc_exit").Call(e.ctx, 3)
	if err == nil || !strings.Contains(err.Error(), "exit_code(3)") || e.in.ExitCode() != 3 {
		t.Fatalf("proc_exit(3): %v, code %d", err, e.in.ExitCode())
	}
}

// TestSockets: the host gives out no sockets; wazero's own host answers
// sock_shutdown on a file with EBADF, the witx's ENOTSOCK is what a
// non-socket gets from every other engine.
func TestSockets(t *testing.T) {
	runCases(t, []errnoCase{
		{name: "sock_shutdown on a preopen", do: func(e *env) Errno { return e.call("sock_shutdown", 3, 3) }, want: ErrnoNotsock},
		{name: "sock_shutdown on stdout", do: func(e *env) Errno { return e.call("sock_shutdown", 1, 1) }, want: ErrnoNotsock},
		{name: "sock_shutdown on a closed fd", do: func(e *env) Errno { return e.call("sock_shutdown", 77, 1) }, want: ErrnoBadf},
		{name: "sock_accept on a preopen", do: func(e *env) Errno { return e.call("sock_accept", 3, 0, resPtr) }, want: ErrnoNotsock},
		{name: "sock_recv on stdin", do: func(e *env) Errno { return e.call("sock_recv", 0, iovPtr, 1, 0, resPtr, resPtr+4) }, want: ErrnoNotsock},
		{name: "sock_send on stdout", do: func(e *env) Errno { return e.call("sock_send", 1, iovPtr, 1, 0, resPtr) }, want: ErrnoNotsock},
	})
}

// TestStdio: fds 0-2 are character devices, stdin readable, stdout and
// stderr writable, none seekable (ESPIPE).
func TestStdio(t *testing.T) {
	fdstat := func(fd uint32, typ uint8, base uint64) errnoCase {
		return errnoCase{name: "fdstat of fd " + string(rune('0'+fd)), do: func(e *env) Errno { return e.call("fd_fdstat_get", uint64(fd), resPtr) }, check: func(t *testing.T, e *env) {
			b := e.bytes(resPtr, sizeFdstat)
			if b[0] != typ || le64(b[8:]) != base || le64(b[16:]) != 0 {
				t.Errorf("filetype %d base %#x inheriting %#x; want %d %#x 0", b[0], le64(b[8:]), le64(b[16:]), typ, base)
			}
		}}
	}
	// Not terminals: seek and tell rights (seeking is still ESPIPE), so
	// that wasi-libc's isatty() says no.
	const notTTY = RightFdSeek | RightFdTell
	runCases(t, []errnoCase{
		fdstat(0, FiletypeCharacterDevice, rightsStdin|notTTY),
		fdstat(1, FiletypeCharacterDevice, rightsStdout|notTTY),
		fdstat(2, FiletypeCharacterDevice, rightsStdout|notTTY),
		{name: "filestat of stdout", do: func(e *env) Errno { return e.call("fd_filestat_get", 1, resPtr) }, check: func(t *testing.T, e *env) {
			if e.bytes(resPtr+16, 1)[0] != FiletypeCharacterDevice {
				t.Errorf("filetype %d", e.bytes(resPtr+16, 1)[0])
			}
		}},
		{name: "write stdout", do: func(e *env) Errno {
			iovs, n := e.iov("hi\n", 0)
			return e.call("fd_write", 1, iovs, n, resPtr)
		}, check: func(t *testing.T, e *env) {
			if e.stdout.String() != "hi\n" || e.u32(resPtr) != 3 {
				t.Errorf("stdout %q, nwritten %d", e.stdout, e.u32(resPtr))
			}
		}},
		{name: "read stdout lacks the right", do: func(e *env) Errno { iovs, n := e.iov("", 4); return e.call("fd_read", 1, iovs, n, resPtr) }, want: ErrnoNotcapable},
		{name: "write stdin lacks the right", do: func(e *env) Errno { iovs, n := e.iov("x", 0); return e.call("fd_write", 0, iovs, n, resPtr) }, want: ErrnoNotcapable},
		{name: "seek stdout", do: func(e *env) Errno { return e.call("fd_seek", 1, 0, whenceCur, resPtr) }, want: ErrnoSpipe},
		{name: "tell stdin", do: func(e *env) Errno { return e.call("fd_tell", 0, resPtr) }, want: ErrnoSpipe},
		{name: "pwrite stdout", do: func(e *env) Errno { iovs, n := e.iov("x", 0); return e.call("fd_pwrite", 1, iovs, n, 0, resPtr) }, want: ErrnoSpipe},
		{name: "read empty stdin is EOF", do: func(e *env) Errno { iovs, n := e.iov("", 4); return e.call("fd_read", 0, iovs, n, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != 0 {
				t.Errorf("nread %d", e.u32(resPtr))
			}
		}},
		{name: "stdin nonblock set", do: func(e *env) Errno { return e.call("fd_fdstat_set_flags", 0, fdflagNonblock) }, check: func(t *testing.T, e *env) {
			e.call("fd_fdstat_get", 0, resPtr)
			if f := e.bytes(resPtr+2, 1)[0]; f != fdflagNonblock {
				t.Errorf("flags %d", f)
			}
		}},
		{name: "stdio readdir", do: func(e *env) Errno { return e.call("fd_readdir", 0, bufPtr, 128, 0, resPtr) }, want: ErrnoNotdir},
		{name: "stdio is no preopen", do: func(e *env) Errno { return e.call("fd_prestat_get", 1, resPtr) }, want: ErrnoBadf},
	})
}

// writes records each Write it gets.
type writes struct{ calls []string }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, string(p))
	return len(p), nil
}

// TestStdoutOneWrite: the iovecs of one fd_write reach stdout in one Write
// (wasi-libc hands over its buffer and the new data as two iovecs).
func TestStdoutOneWrite(t *testing.T) {
	w := &writes{}
	e := newEnv(t, func(c *Config) { c.Stdout = w })
	mem := e.mod.Memory()
	mem.WriteString(bufPtr, "hello ")
	mem.WriteString(bufPtr+100, "world\n")
	for i, v := range []uint32{bufPtr, 6, bufPtr + 200, 0, bufPtr + 100, 6} {
		mem.WriteUint32Le(iovPtr+uint32(4*i), v)
	}
	for range 2 {
		if errno := e.call("fd_write", 1, iovPtr, 3, resPtr); errno != 0 || e.u32(resPtr) != 12 {
			t.Fatalf("fd_write: errno %d nwritten %d", errno, e.u32(resPtr))
		}
	}
	if len(w.calls) != 2 || w.calls[0] != "hello world\n" || w.calls[1] != w.calls[0] {
		t.Errorf("writes %q, want two of %q", w.calls, "hello world\n")
	}
}

// TestStdioTerminal: a terminal's fd is a character device without seek
// and tell rights, which wasi-libc's isatty() takes for a terminal.
func TestStdioTerminal(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Terminal = [3]bool{false, true, false} })
	for fd, want := range map[uint64]uint64{1: rightsStdout, 2: rightsStdout | RightFdSeek | RightFdTell} {
		if errno := e.call("fd_fdstat_get", fd, resPtr); errno != 0 || e.u64(resPtr+8) != want {
			t.Errorf("fd %d: errno %d rights %#x, want %#x", fd, errno, e.u64(resPtr+8), want)
		}
	}
}

// TestStdinNonblockAndRead: a nonblocking stdin with nothing to read is
// EAGAIN; input is read once it comes.
func TestStdinNonblockAndRead(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	e := newEnv(t, func(c *Config) { c.Stdin = pr })
	if errno := e.call("fd_fdstat_set_flags", 0, fdflagNonblock); errno != 0 {
		t.Fatal(errno)
	}
	iovs, n := e.iov("", 16)
	if errno := e.call("fd_read", 0, iovs, n, resPtr); errno != ErrnoAgain {
		t.Fatalf("nonblocking read of an empty pipe: errno %d, want EAGAIN", errno)
	}
	e.call("fd_fdstat_set_flags", 0, 0)
	pw.WriteString("input")
	if errno := e.call("fd_read", 0, iovs, n, resPtr); errno != 0 || e.u32(resPtr) != 5 || string(e.bytes(bufPtr, 5)) != "input" {
		t.Fatalf("blocking read: errno %d, %d bytes %q", errno, e.u32(resPtr), e.bytes(bufPtr, 5))
	}
}

// TestFdErrnos: the fd_* functions on each kind of fd. A directory is no
// file to read, write, seek, advise or allocate (EBADF, as the public WASI
// test suite's dir_fd_op_failures expects, where POSIX would say EISDIR or
// succeed); a closed fd is EBADF; a missing right ENOTCAPABLE.
func TestFdErrnos(t *testing.T) {
	withFile := func(e *env) { e.write("f", "0123456789") }
	readFd := func(e *env) uint32 { return e.mustOpen("f", 0, rRead, 0) }
	rwFd := func(e *env) uint32 { return e.mustOpen("f", 0, rRW, 0) }
	iov := func(e *env) (uint64, uint64) { return e.iov("", 4) }
	runCases(t, []errnoCase{
		{name: "fd_read closed fd", do: func(e *env) Errno { a, n := iov(e); return e.call("fd_read", 9, a, n, resPtr) }, want: ErrnoBadf},
		{name: "fd_read dir", do: func(e *env) Errno { a, n := iov(e); return e.call("fd_read", 3, a, n, resPtr) }, want: ErrnoBadf},
		{name: "fd_write dir", do: func(e *env) Errno { a, n := e.iov("x", 0); return e.call("fd_write", 3, a, n, resPtr) }, want: ErrnoBadf},
		{name: "fd_pread dir", do: func(e *env) Errno { a, n := iov(e); return e.call("fd_pread", 3, a, n, 0, resPtr) }, want: ErrnoBadf},
		{name: "fd_pwrite dir", do: func(e *env) Errno { a, n := e.iov("x", 0); return e.call("fd_pwrite", 3, a, n, 0, resPtr) }, want: ErrnoBadf},
		{name: "fd_seek dir", do: func(e *env) Errno { return e.call("fd_seek", 3, 0, whenceCur, resPtr) }, want: ErrnoBadf},
		{name: "fd_tell dir", do: func(e *env) Errno { return e.call("fd_tell", 3, resPtr) }, want: ErrnoBadf},
		{name: "fd_advise dir", do: func(e *env) Errno { return e.call("fd_advise", 3, 0, 0, 4) }, want: ErrnoBadf},
		{name: "fd_allocate dir", do: func(e *env) Errno { return e.call("fd_allocate", 3, 0, 0) }, want: ErrnoBadf},
		{name: "fd_filestat_set_size dir", do: func(e *env) Errno { return e.call("fd_filestat_set_size", 3, 0) }, want: ErrnoBadf},
		{name: "fd_filestat_get dir", do: func(e *env) Errno { return e.call("fd_filestat_get", 3, resPtr) }, check: func(t *testing.T, e *env) {
			if e.bytes(resPtr+16, 1)[0] != FiletypeDirectory {
				t.Errorf("filetype %d", e.bytes(resPtr+16, 1)[0])
			}
		}},
		{name: "fd_read file", setup: withFile, do: func(e *env) Errno { a, n := iov(e); return e.call("fd_read", uint64(readFd(e)), a, n, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != 4 || string(e.bytes(bufPtr, 4)) != "0123" {
				t.Errorf("read %d %q", e.u32(resPtr), e.bytes(bufPtr, 4))
			}
		}},
		{name: "fd_read bad iovec", setup: withFile, do: func(e *env) Errno {
			fd := readFd(e)
			e.mod.Memory().WriteUint32Le(iovPtr, 65530)
			e.mod.Memory().WriteUint32Le(iovPtr+4, 100)
			return e.call("fd_read", uint64(fd), iovPtr, 1, resPtr)
		}, want: ErrnoFault},
		{name: "fd_read more iovecs than IOV_MAX", setup: withFile, do: func(e *env) Errno { return e.call("fd_read", uint64(readFd(e)), iovPtr, 1025, resPtr) }, want: ErrnoInval},
		{name: "fd_write iovec count overflowing", do: func(e *env) Errno { return e.call("fd_write", 1, iovPtr, 1<<29+1, resPtr) }, want: ErrnoInval},
		{name: "fd_write read-only fd", setup: withFile, do: func(e *env) Errno { a, n := e.iov("x", 0); return e.call("fd_write", uint64(readFd(e)), a, n, resPtr) }, want: ErrnoNotcapable},
		{name: "fd_pread file", setup: withFile, do: func(e *env) Errno { a, n := iov(e); return e.call("fd_pread", uint64(readFd(e)), a, n, 6, resPtr) }, check: func(t *testing.T, e *env) {
			if string(e.bytes(bufPtr, e.u32(resPtr))) != "6789" {
				t.Errorf("pread %q", e.bytes(bufPtr, e.u32(resPtr)))
			}
		}},
		{name: "fd_pread negative offset", setup: withFile, do: func(e *env) Errno { a, n := iov(e); return e.call("fd_pread", uint64(readFd(e)), a, n, 1<<63, resPtr) }, want: ErrnoInval},
		{name: "fd_seek end", setup: withFile, do: func(e *env) Errno { return e.call("fd_seek", uint64(readFd(e)), ^uint64(1), whenceEnd, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u64(resPtr) != 8 {
				t.Errorf("offset %d", e.u64(resPtr))
			}
		}},
		{name: "fd_seek bad whence", setup: withFile, do: func(e *env) Errno { return e.call("fd_seek", uint64(readFd(e)), 0, 3, resPtr) }, want: ErrnoInval},
		{name: "fd_seek before start", setup: withFile, do: func(e *env) Errno { return e.call("fd_seek", uint64(readFd(e)), ^uint64(0), whenceSet, resPtr) }, want: ErrnoInval},
		{name: "fd_seek with only fd_tell", setup: withFile, do: func(e *env) Errno {
			fd := e.mustOpen("f", 0, RightFdRead|RightFdTell, 0)
			if errno := e.call("fd_seek", uint64(fd), 0, whenceCur, resPtr); errno != 0 {
				return errno
			}
			return e.call("fd_seek", uint64(fd), 1, whenceSet, resPtr)
		}, want: ErrnoNotcapable},
		{name: "fd_tell", setup: withFile, do: func(e *env) Errno {
			fd := readFd(e)
			e.call("fd_seek", uint64(fd), 3, whenceSet, resPtr)
			return e.call("fd_tell", uint64(fd), resPtr)
		}, check: func(t *testing.T, e *env) {
			if e.u64(resPtr) != 3 {
				t.Errorf("tell %d", e.u64(resPtr))
			}
		}},
		{name: "fd_advise bad advice", setup: withFile, do: func(e *env) Errno { return e.call("fd_advise", uint64(e.mustOpen("f", 0, RightFdAdvise, 0)), 0, 0, 6) }, want: ErrnoInval},
		{name: "fd_advise without the right", setup: withFile, do: func(e *env) Errno { return e.call("fd_advise", uint64(readFd(e)), 0, 0, 1) }, want: ErrnoNotcapable},
		{name: "fd_advise", setup: withFile, do: func(e *env) Errno { return e.call("fd_advise", uint64(e.mustOpen("f", 0, RightFdAdvise, 0)), 0, 10, 3) }},
		{name: "fd_allocate zero length", setup: withFile, do: func(e *env) Errno { return e.call("fd_allocate", uint64(rwFd(e)), 0, 0) }, want: ErrnoInval},
		{name: "fd_allocate grows", setup: withFile, do: func(e *env) Errno { return e.call("fd_allocate", uint64(rwFd(e)), 10, 90) }, check: func(t *testing.T, e *env) {
			if st, _ := os.Stat(filepath.Join(e.dir, "f")); st.Size() != 100 {
				t.Errorf("size %d", st.Size())
			}
		}},
		{name: "fd_filestat_set_size", setup: withFile, do: func(e *env) Errno { return e.call("fd_filestat_set_size", uint64(rwFd(e)), 3) }, check: func(t *testing.T, e *env) {
			if e.read("f") != "012" {
				t.Errorf("content %q", e.read("f"))
			}
		}},
		{name: "fd_filestat_set_size without the right", setup: withFile, do: func(e *env) Errno { return e.call("fd_filestat_set_size", uint64(readFd(e)), 3) }, want: ErrnoNotcapable},
		{name: "fd_filestat_get file", setup: withFile, do: func(e *env) Errno { return e.call("fd_filestat_get", uint64(readFd(e)), resPtr) }, check: func(t *testing.T, e *env) {
			if e.bytes(resPtr+16, 1)[0] != FiletypeRegularFile || e.u64(resPtr+24) != 1 || e.u64(resPtr+32) != 10 {
				t.Errorf("filetype %d nlink %d size %d", e.bytes(resPtr+16, 1)[0], e.u64(resPtr+24), e.u64(resPtr+32))
			}
		}},
		{name: "fd_filestat_set_times both atim and atim_now", setup: withFile, do: func(e *env) Errno {
			return e.call("fd_filestat_set_times", uint64(e.mustOpen("f", 0, RightFdFilestatSetTimes, 0)), 1, 1, fstAtim|fstAtimNow)
		}, want: ErrnoInval},
		{name: "fd_filestat_set_times", setup: withFile, do: func(e *env) Errno {
			return e.call("fd_filestat_set_times", uint64(e.mustOpen("f", 0, RightFdFilestatSetTimes, 0)), 5e9, 7e9, fstAtim|fstMtim)
		}, check: func(t *testing.T, e *env) {
			if st, _ := os.Stat(filepath.Join(e.dir, "f")); st.ModTime().Unix() != 7 {
				t.Errorf("mtime %v", st.ModTime())
			}
		}},
		{name: "fd_sync file", setup: withFile, do: func(e *env) Errno { return e.call("fd_sync", uint64(rwFd(e))) }},
		{name: "fd_datasync without the right", setup: withFile, do: func(e *env) Errno { return e.call("fd_datasync", uint64(readFd(e))) }, want: ErrnoNotcapable},
		{name: "fd_sync dir", do: func(e *env) Errno { return e.call("fd_sync", 3) }},
		{name: "fd_close twice", do: func(e *env) Errno {
			if errno := e.call("fd_close", 3); errno != 0 {
				return errno
			}
			return e.call("fd_close", 3)
		}, want: ErrnoBadf},
		{name: "fd_fdstat_set_flags without the right", setup: withFile, do: func(e *env) Errno { return e.call("fd_fdstat_set_flags", uint64(rwFd(e)), fdflagAppend) }, want: ErrnoNotcapable},
		{name: "fd_fdstat_set_flags append", setup: withFile, do: func(e *env) Errno {
			fd := e.mustOpen("f", 0, rRW|RightFdFdstatSetFlags, 0)
			if errno := e.call("fd_fdstat_set_flags", uint64(fd), fdflagAppend); errno != 0 {
				return errno
			}
			a, n := e.iov("X", 0)
			return e.call("fd_write", uint64(fd), a, n, resPtr)
		}, check: func(t *testing.T, e *env) {
			if e.read("f") != "0123456789X" {
				t.Errorf("content %q", e.read("f"))
			}
		}},
		{name: "fd_fdstat_set_flags sync cannot change", setup: withFile, do: func(e *env) Errno {
			return e.call("fd_fdstat_set_flags", uint64(e.mustOpen("f", 0, rRead|RightFdFdstatSetFlags, 0)), fdflagSync)
		}, want: ErrnoNotsup},
		{name: "fd_fdstat_set_flags unknown flag", do: func(e *env) Errno { return e.call("fd_fdstat_set_flags", 3, 1<<7) }, want: ErrnoInval},
	})
}

// TestRights: rights as the witx defines them, which wazero's own host
// ignores (it reports fixed rights and checks none).
func TestRights(t *testing.T) {
	withFile := func(e *env) { e.write("f", "data") }
	runCases(t, []errnoCase{
		{name: "preopen rights", do: func(e *env) Errno { return e.call("fd_fdstat_get", 3, resPtr) }, check: func(t *testing.T, e *env) {
			b := e.bytes(resPtr, sizeFdstat)
			if b[0] != FiletypeDirectory || le64(b[8:]) != rightsDir || le64(b[16:]) != rightsDirInheriting {
				t.Errorf("type %d base %#x inh %#x", b[0], le64(b[8:]), le64(b[16:]))
			}
		}},
		{name: "opened file gets what it asked for, only file rights", setup: withFile, do: func(e *env) Errno {
			fd, errno := e.open(3, 0, "f", 0, RightFdRead|RightPathOpen, 0, 0)
			if errno != 0 {
				return errno
			}
			return e.call("fd_fdstat_get", uint64(fd), resPtr)
		}, check: func(t *testing.T, e *env) {
			if base := e.u64(resPtr + 8); base != RightFdRead {
				t.Errorf("base %#x, want fd_read only", base)
			}
		}},
		{name: "set_rights narrows", setup: withFile, do: func(e *env) Errno {
			fd := e.mustOpen("f", 0, rRead, 0)
			if errno := e.call("fd_fdstat_set_rights", uint64(fd), RightFdSeek, 0); errno != 0 {
				return errno
			}
			a, n := e.iov("", 4)
			return e.call("fd_read", uint64(fd), a, n, resPtr)
		}, want: ErrnoNotcapable},
		{name: "set_rights cannot widen", setup: withFile, do: func(e *env) Errno {
			fd := e.mustOpen("f", 0, RightFdRead, 0)
			return e.call("fd_fdstat_set_rights", uint64(fd), RightFdRead|RightFdWrite, 0)
		}, want: ErrnoNotcapable},
		{name: "set_rights on a closed fd", do: func(e *env) Errno { return e.call("fd_fdstat_set_rights", 40, 0, 0) }, want: ErrnoBadf},
		{name: "dropped path_open on the preopen", do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightPathOpen, rightsDirInheriting)
			_, errno := e.open(3, 0, ".", 0, 0, 0, 0)
			return errno
		}, want: ErrnoNotcapable},
		{name: "asking more than the inheriting rights", setup: withFile, do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir, rightsDirInheriting&^RightFdWrite)
			_, errno := e.open(3, 0, "f", 0, RightFdWrite, 0, 0)
			return errno
		}, want: ErrnoNotcapable},
		{name: "inherited rights bound a subdirectory", do: func(e *env) Errno {
			os.Mkdir(filepath.Join(e.dir, "d"), 0o755)
			e.call("fd_fdstat_set_rights", 3, rightsDir, rightsDir&^RightPathCreateDirectory)
			fd, errno := e.open(3, 0, "d", oflagDirectory, rightsDir&^RightPathCreateDirectory, rightsDirInheriting, 0)
			if errno != 0 {
				return errno
			}
			return e.pathCall("path_create_directory", fd, "x")
		}, want: ErrnoNotcapable},
		{name: "creating needs path_create_file", do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightPathCreateFile, rightsDirInheriting)
			_, errno := e.open(3, 0, "new", oflagCreat, RightFdWrite, 0, 0)
			return errno
		}, want: ErrnoNotcapable},
		{name: "truncating needs path_filestat_set_size", setup: withFile, do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightPathFilestatSetSize, rightsDirInheriting)
			_, errno := e.open(3, 0, "f", oflagTrunc, RightFdWrite, 0, 0)
			return errno
		}, want: ErrnoNotcapable},
		{name: "readdir needs fd_readdir", do: func(e *env) Errno {
			e.call("fd_fdstat_set_rights", 3, rightsDir&^RightFdReaddir, rightsDirInheriting)
			return e.call("fd_readdir", 3, bufPtr, 128, 0, resPtr)
		}, want: ErrnoNotcapable},
	})
}

// TestRenumber: fd_renumber moves any fd over any other open one, preopens
// and stdio included, closing the one replaced; wazero's own host refuses
// to renumber over a preopen (ENOTSUP).
func TestRenumber(t *testing.T) {
	runCases(t, []errnoCase{
		{name: "over a preopen", do: func(e *env) Errno {
			e.write("f", "x")
			fd := e.mustOpen("f", 0, rRead, 0)
			if errno := e.call("fd_renumber", uint64(fd), 3); errno != 0 {
				return errno
			}
			return e.call("fd_prestat_get", 3, resPtr)
		}, want: ErrnoBadf, check: func(t *testing.T, e *env) {
			if errno := e.call("fd_filestat_get", 3, resPtr); errno != 0 || e.bytes(resPtr+16, 1)[0] != FiletypeRegularFile {
				t.Errorf("fd 3 after renumber: errno %d type %d", errno, e.bytes(resPtr+16, 1)[0])
			}
			if errno := e.call("fd_close", 5); errno != ErrnoBadf {
				t.Errorf("the renumbered fd is still open: close %d", errno)
			}
		}},
		{name: "preopen over stdout", do: func(e *env) Errno { return e.call("fd_renumber", 4, 1) }, check: func(t *testing.T, e *env) {
			if errno := e.call("fd_prestat_get", 1, resPtr); errno != 0 || e.u32(resPtr+4) != 3 {
				t.Errorf("fd 1 is not the /ro preopen: %d", errno)
			}
		}},
		{name: "to a free number", do: func(e *env) Errno { return e.call("fd_renumber", 0, 100) }, want: ErrnoBadf, check: func(t *testing.T, e *env) {
			if e.call("fd_fdstat_get", 0, resPtr) != 0 {
				t.Error("stdin was lost")
			}
		}},
		{name: "stdin over an opened file", do: func(e *env) Errno {
			e.write("f", "x")
			return e.call("fd_renumber", 0, uint64(e.mustOpen("f", 0, RightFdRead, 0)))
		}, check: func(t *testing.T, e *env) {
			if e.call("fd_fdstat_get", 5, resPtr) != 0 || e.bytes(resPtr, 1)[0] != FiletypeCharacterDevice || e.call("fd_fdstat_get", 0, resPtr) != ErrnoBadf {
				t.Error("stdin was not moved to fd 5")
			}
		}},
		{name: "from a closed fd", do: func(e *env) Errno { return e.call("fd_renumber", 50, 3) }, want: ErrnoBadf},
		{name: "onto itself", do: func(e *env) Errno { return e.call("fd_renumber", 3, 3) }, check: func(t *testing.T, e *env) {
			if e.call("fd_prestat_get", 3, resPtr) != 0 {
				t.Error("fd 3 lost")
			}
		}},
	})
}

// TestPrestat: preopens are enumerated from fd 3 until EBADF.
func TestPrestat(t *testing.T) {
	runCases(t, []errnoCase{
		{name: "prestat_get", do: func(e *env) Errno { return e.call("fd_prestat_get", 3, resPtr) }, check: func(t *testing.T, e *env) {
			if e.u32(resPtr) != preopentypeDir || e.u32(resPtr+4) != uint32(len("/sandbox")) {
				t.Errorf("tag %d len %d", e.u32(resPtr), e.u32(resPtr+4))
			}
		}},
		{name: "prestat_get past the preopens", do: func(e *env) Errno { return e.call("fd_prestat_get", 5, resPtr) }, want: ErrnoBadf},
		{name: "dir_name", do: func(e *env) Errno { return e.call("fd_prestat_dir_name", 4, bufPtr, 3) }, check: func(t *testing.T, e *env) {
			if string(e.bytes(bufPtr, 3)) != "/ro" {
				t.Errorf("name %q", e.bytes(bufPtr, 3))
			}
		}},
		{name: "dir_name short buffer", do: func(e *env) Errno { return e.call("fd_prestat_dir_name", 3, bufPtr, 3) }, want: ErrnoNametoolong},
		{name: "dir_name of an opened dir", do: func(e *env) Errno {
			fd, _ := e.open(3, 0, ".", oflagDirectory, rightsDir, 0, 0)
			return e.call("fd_prestat_dir_name", uint64(fd), bufPtr, 64)
		}, want: ErrnoBadf},
	})
}

// counter is a Files with a limit.
type counter struct{ open, limit int }

func (c *counter) Acquire() Errno {
	if c.open >= c.limit {
		return ErrnoMfile
	}
	c.open++
	return 0
}

func (c *counter) Release() { c.open-- }

// TestFilesCounted: every path_open counts a file until closed, a refused
// count is the guest's errno, and a preopen is counted at its first use
// (a guest that never touches it runs with no file to spare); when that
// count is refused the guest traps.
func TestFilesCounted(t *testing.T) {
	c := &counter{limit: 2}
	e := newEnv(t, func(cfg *Config) { cfg.Files = c })
	if c.open != 0 {
		t.Fatalf("%d counted before any use", c.open)
	}
	e.write("f", "x")
	fd := e.mustOpen("f", 0, RightFdRead, 0) // preopen 3 counted, then f
	if c.open != 2 {
		t.Fatalf("%d counted after one open, want 2 (the preopen and the file)", c.open)
	}
	if _, errno := e.open(3, 0, "f", 0, RightFdRead, 0, 0); errno != ErrnoMfile {
		t.Errorf("open past the limit: errno %d, want EMFILE", errno)
	}
	e.call("fd_close", uint64(fd))
	if c.open != 1 {
		t.Errorf("%d counted after close, want 1", c.open)
	}
	// fd 4 (the read-only preopen) cannot be counted any more: a trap.
	c.limit = 1
	_, err := e.mod.ExportedFunction("fd_prestat_get").Call(e.ctx, 4, resPtr)
	if err == nil || !strings.Contains(err.Error(), "cannot be counted") {
		t.Errorf("first use of a preopen past the limit: %v, want a trap", err)
	}
	e.in.Close()
	if c.open != 0 {
		t.Errorf("%d counted after Close", c.open)
	}
}
