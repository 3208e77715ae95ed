// Package wasip1 is kuasar's own host of WASI preview 1
// (wasi_snapshot_preview1), run on wazero's runtime and compiler in place
// of wazero's WASI.
//
// It implements every function of the preview-1 witx with the errno
// semantics the specification gives them, which wazero's own host only
// approximates: rights are kept per descriptor and enforced (an fd gets the
// rights it asked for, bounded by its directory's inheriting rights;
// fd_fdstat_set_rights only narrows; a missing right is ENOTCAPABLE),
// fd_renumber moves any descriptor (a preopen included) over any other,
// hard links and symlink metadata work, path_readlink truncates into small
// buffers, fd_pwrite writes at its offset on a file opened for append,
// stdio are character devices with read or write rights, poll_oneoff waits
// on clocks, files and stdin (whatever its reader: a FIFO, a terminal, a
// pipe), and sockets' functions fail with ENOTSOCK on the files this host
// gives out.
//
// Every path is resolved once, by the kernel, through package fsroot
// (openat2 with RESOLVE_IN_ROOT from a directory fd, then *at calls on
// fds), so a guest cannot leave its preopened directories, not even by
// racing renames. Paths are relative to their directory fd: an absolute
// path, or one whose ".." climb above the fd, is ENOTCAPABLE. Symlinks met
// on the way resolve as if the directory fd were the root.
//
// One host module serves every instance of a runtime: the per-instance
// state (an Instance: arguments, environment, stdio, fd table) travels in
// the context of the call that runs the guest (WithInstance).
package wasip1

import (
	"context"
	"fmt"
	"io"
	"path"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/internal/fsroot"
)

// Preopen is a directory the guest gets as a preopened fd.
type Preopen struct {
	// Root is the directory; the Instance owns it from New on and closes
	// it (when the guest closes the fd, or in Close).
	Root *fsroot.Root
	// Open, when Root is nil, opens the directory at the guest's first
	// use of the fd (the guest traps when it fails), so that a guest that
	// never touches its files (an idle one blocked on stdin) holds no
	// descriptor for them.
	Open func() (*fsroot.Root, error)
	// GuestPath is the absolute name the guest knows it by ("/data").
	GuestPath string
	// ReadOnly refuses every change through it (EROFS).
	ReadOnly bool
}

// Files counts the files a guest holds open, against its own limit and a
// budget shared with other guests.
type Files interface {
	// Acquire counts one more open file. It returns 0, or ErrnoMfile (the
	// guest's own limit) or ErrnoNfile (the shared budget) to refuse it.
	Acquire() Errno
	// Release uncounts one file.
	Release()
}

// Config is what one instance runs with.
type Config struct {
	// Args is argv, argv[0] included.
	Args []string
	// Env holds KEY=VALUE strings.
	Env []string
	// Stdin is read only when the guest reads (or polls) fd 0; nil is
	// empty input.
	Stdin io.Reader
	// Stdout and Stderr get fd 1 and 2; nil discards.
	Stdout, Stderr io.Writer
	// Terminal tells which of stdin, stdout and stderr are terminals.
	// All three are character devices to the guest; a terminal's fd has
	// no seek or tell rights, the others have both (seeking them is
	// ESPIPE), which is how wasi-libc's isatty() tells them apart: a
	// guest writing to a pipe or a log buffers fully and prints no
	// terminal colours.
	Terminal [3]bool
	// Preopens become fds 3, 4, ... in this order.
	Preopens []Preopen
	// Files, when set, counts every file the guest opens. A preopen is
	// counted when the guest first uses its fd (wasi-libc looks at the
	// preopens only in programs that use files, so one that uses none
	// still runs when the budget is spent); when that count is refused
	// the guest traps, with the refusal recorded by Files for the caller
	// to report: the program cannot run without its mounts.
	Files Files
	// Random fills random_get; nil is crypto/rand.
	Random io.Reader
	// Blocking, when set, is called before the guest's goroutine waits
	// for stdin or in poll_oneoff (a sleep, a clock, stdin's readiness),
	// and what it returns after (wasm.RunConfig.Blocking).
	Blocking func() (resume func())
}

// Instance is the WASI state of one guest: its fd table, arguments,
// environment and stdio. It is used by the guest's goroutine only (WASI
// preview 1 has no threads); Close it once the guest has returned.
type Instance struct {
	args, env []byte // NUL-terminated strings, concatenated
	nargs     int
	nenv      int
	random    io.Reader
	files     Files

	// fds is the fd table: fds[n] is fd n, nil when closed. New fds take
	// the lowest free number from 3 and fd_renumber only moves onto open
	// ones, so the table stays as long as the most fds held at once.
	fds []*fdEntry
	iov [][]byte // scratch for iovec arrays

	// stdio and stdin hold fds 0-2 and the stdin reader, allocated with
	// the Instance (one allocation less per entry on every run).
	stdio [3]fdEntry
	stdin stdinReader
	out   []byte // scratch joining the iovecs of one stdout write

	// stopFd is an eventfd made readable when the run is stopped, so that
	// a wait in poll(2) (waitFd) ends with it; -1 until first needed.
	stopMu   sync.Mutex
	stopFd   int
	stopOff  func() bool
	stopDone bool

	closeOnce sync.Once
	// exitCode is set by proc_exit.
	exitCode uint32
}

// fdKind is what an fd refers to.
type fdKind uint8

const (
	kindStdin fdKind = iota
	kindStdout
	kindFile
	kindDir
)

// fdEntry is one open descriptor of the guest.
type fdEntry struct {
	kind      fdKind
	base, inh uint64 // rights
	flags     uint16 // fdflags as the guest set them
	filetype  uint8
	readOnly  bool
	preopen   string                       // guest path of a preopen, "" otherwise
	counted   bool                         // counted in Files
	lazyCount bool                         // a preopen to be counted in Files at its first use
	openRoot  func() (*fsroot.Root, error) // a preopen whose root opens at its first use
	hostFd    int                          // kindFile: the open file
	// hostNonblock is set for a FIFO, device or socket: its host fd stays
	// O_NONBLOCK and a guest's blocking read or write waits in waitFd.
	hostNonblock bool
	root         *fsroot.Root
	readFd       int // kindDir: a readable fd of root for getdents (-1 until needed; root's own when it is one)
	ownReadFd    bool
	dirents      []dirent // kindDir: the listing fd_readdir serves cookies from
	in           *stdinReader
	out          io.Writer
}

// New creates the state of one instance. It takes ownership of the
// preopens' Roots.
func New(cfg Config) *Instance {
	in := &Instance{random: cfg.Random, files: cfg.Files, stopFd: -1, fds: make([]*fdEntry, 3+len(cfg.Preopens))}
	for _, a := range cfg.Args {
		in.args = append(append(in.args, a...), 0)
	}
	in.nargs = len(cfg.Args)
	for _, e := range cfg.Env {
		in.env = append(append(in.env, e...), 0)
	}
	in.nenv = len(cfg.Env)
	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	stdio := func(fd int, base uint64) uint64 {
		if cfg.Terminal[fd] {
			return base
		}
		return base | RightFdSeek | RightFdTell
	}
	in.stdin.init(cfg.Stdin)
	in.stdin.blocking = cfg.Blocking
	in.stdio = [3]fdEntry{
		{kind: kindStdin, base: stdio(0, rightsStdin), filetype: FiletypeCharacterDevice, in: &in.stdin, hostFd: -1, readFd: -1},
		{kind: kindStdout, base: stdio(1, rightsStdout), filetype: FiletypeCharacterDevice, out: stdout, hostFd: -1, readFd: -1},
		{kind: kindStdout, base: stdio(2, rightsStdout), filetype: FiletypeCharacterDevice, out: stderr, hostFd: -1, readFd: -1},
	}
	for i := range in.stdio {
		in.fds[i] = &in.stdio[i]
	}
	for i, p := range cfg.Preopens {
		in.fds[uint32(3+i)] = &fdEntry{
			kind: kindDir, base: rightsDir, inh: rightsDirInheriting, filetype: FiletypeDirectory,
			readOnly: p.ReadOnly, preopen: path.Clean(p.GuestPath), root: p.Root, openRoot: p.Open, hostFd: -1, readFd: -1,
			lazyCount: cfg.Files != nil,
		}
	}
	return in
}

// Close closes every descriptor the guest still holds.
func (in *Instance) Close() {
	in.closeOnce.Do(func() {
		in.stopMu.Lock()
		if in.stopOff != nil {
			in.stopOff()
		}
		if in.stopFd >= 0 {
			unix.Close(in.stopFd)
		}
		in.stopFd, in.stopDone = -1, true
		in.stopMu.Unlock()
		for n, e := range in.fds {
			if e != nil {
				in.closeEntry(e)
				in.fds[n] = nil
			}
		}
	})
}

// ExitCode is the code the guest passed to proc_exit.
func (in *Instance) ExitCode() uint32 { return in.exitCode }

// closeEntry releases what e holds.
func (in *Instance) closeEntry(e *fdEntry) {
	switch e.kind {
	case kindFile:
		unix.Close(e.hostFd)
	case kindDir:
		if e.ownReadFd && e.readFd >= 0 {
			unix.Close(e.readFd)
		}
		if e.root != nil {
			e.root.Close()
		}
	}
	if e.counted && in.files != nil {
		in.files.Release()
	}
}

// get returns the entry of fd, or EBADF.
func (in *Instance) get(fd uint32) (*fdEntry, Errno) {
	e, errno := in.getUnopened(fd)
	if errno == 0 && e.root == nil && e.openRoot != nil {
		openPreopen(e)
	}
	return e, errno
}

// getUnopened is get without opening a preopen's directory: for the calls
// that only name it (fd_prestat_get, fd_prestat_dir_name), which wasi-libc
// makes for every preopen at the start of any program that uses files.
func (in *Instance) getUnopened(fd uint32) (*fdEntry, Errno) {
	if fd >= uint32(len(in.fds)) || in.fds[fd] == nil {
		return nil, ErrnoBadf
	}
	e := in.fds[fd]
	if e.lazyCount {
		in.countPreopen(e)
	}
	return e, 0
}

// openPreopen opens a preopen's directory at its first use, or traps.
func openPreopen(e *fdEntry) {
	root, err := e.openRoot()
	if err != nil {
		panic(fmt.Errorf("the preopened directory %s cannot be opened: %w", e.preopen, err))
	}
	e.root, e.openRoot = root, nil
}

// countPreopen counts a preopen at its first use, or traps.
func (in *Instance) countPreopen(e *fdEntry) {
	if errno := in.files.Acquire(); errno != 0 {
		panic(fmt.Errorf("the preopened directory %s cannot be counted as an open file (WASI errno %d)", e.preopen, errno))
	}
	e.lazyCount, e.counted = false, true
}

// getRights returns fd's entry when it holds every right in need.
func (in *Instance) getRights(fd uint32, need uint64) (*fdEntry, Errno) {
	e, errno := in.get(fd)
	if errno != 0 {
		return nil, errno
	}
	if e.base&need != need {
		return nil, ErrnoNotcapable
	}
	return e, 0
}

// getFile returns fd's entry when it is a regular (host) file with the
// rights in need. A directory is EBADF (it is no file to read, write or
// seek), stdio ESPIPE for positioned operations (spipe set) else EBADF.
func (in *Instance) getFile(fd uint32, need uint64, spipe bool) (*fdEntry, Errno) {
	e, errno := in.get(fd)
	if errno != 0 {
		return nil, errno
	}
	switch e.kind {
	case kindDir:
		return nil, ErrnoBadf
	case kindStdin, kindStdout:
		if spipe {
			return nil, ErrnoSpipe
		}
		return nil, ErrnoBadf
	}
	if e.base&need != need {
		return nil, ErrnoNotcapable
	}
	return e, 0
}

// getDir returns fd's entry when it is a directory with the rights in
// need; anything else is ENOTDIR.
func (in *Instance) getDir(fd uint32, need uint64) (*fdEntry, Errno) {
	e, errno := in.get(fd)
	if errno != 0 {
		return nil, errno
	}
	if e.kind != kindDir {
		return nil, ErrnoNotdir
	}
	if e.base&need != need {
		return nil, ErrnoNotcapable
	}
	return e, 0
}

// add puts e at the lowest free fd number.
func (in *Instance) add(e *fdEntry) uint32 {
	for n := 3; n < len(in.fds); n++ {
		if in.fds[n] == nil {
			in.fds[n] = e
			return uint32(n)
		}
	}
	in.fds = append(in.fds, e)
	return uint32(len(in.fds) - 1)
}

// dirReadFd returns a descriptor of the directory that getdents and fsync
// accept: the Root's own unless it is an O_PATH one (preopens), then one
// opened once through the Root.
func (e *fdEntry) dirReadFd() (int, Errno) {
	if e.readFd >= 0 {
		return e.readFd, 0
	}
	fl, err := unix.FcntlInt(uintptr(e.root.Fd()), unix.F_GETFL, 0)
	if err == nil && fl&unix.O_PATH == 0 {
		e.readFd = e.root.Fd()
		return e.readFd, 0
	}
	fd, err := e.root.OpenFd(".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, toErrno(err)
	}
	e.readFd, e.ownReadFd = fd, true
	return fd, 0
}

// instanceKey carries the Instance in the context of a guest's calls.
type instanceKey struct{}

// WithInstance returns ctx carrying in: the host functions called by a
// guest run with that context act on in.
func WithInstance(ctx context.Context, in *Instance) context.Context {
	return context.WithValue(ctx, instanceKey{}, in)
}

func fromContext(ctx context.Context) *Instance {
	in, _ := ctx.Value(instanceKey{}).(*Instance)
	return in
}

// waitFd waits until fd is ready for events (unix.POLLIN or POLLOUT) or
// the run (ctx) is stopped, which is EINTR. It serves the blocking reads
// and writes of FIFOs, devices and sockets, whose host fds are
// non-blocking: a read blocked in the kernel could not be interrupted by
// a kill.
func (in *Instance) waitFd(ctx context.Context, fd int, events int16) Errno {
	in.stopMu.Lock()
	if in.stopFd < 0 && !in.stopDone {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			in.stopMu.Unlock()
			return toErrno(err)
		}
		in.stopFd = efd
		in.stopOff = context.AfterFunc(ctx, func() {
			in.stopMu.Lock()
			defer in.stopMu.Unlock()
			if in.stopFd >= 0 {
				unix.Write(in.stopFd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			}
		})
	}
	stop := in.stopFd
	in.stopMu.Unlock()
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(stop), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return toErrno(err)
		}
		if pfd[1].Revents != 0 || ctx.Err() != nil {
			return ErrnoIntr
		}
		if pfd[0].Revents != 0 {
			return 0
		}
	}
}
