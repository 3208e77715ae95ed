package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kuasar-go/kuasar/quark"
	"github.com/kuasar-go/kuasar/sandboxer/backend"
)

// cliNamespace is the containerd namespace the CLI's sandboxes report in
// their events and logs (no containerd is involved).
const cliNamespace = "kuasar-run"

// containerID is the id of the one container of a `kuasar run` sandbox.
const containerID = "workload"

// errCreate marks a failure of the container's Create: the workload never
// ran, so kuasar itself failed (exit code 125, or 127 for NotFound).
var errCreate = errors.New("create the container")

// runResult is how a container run through a backend ended.
type runResult struct {
	// code is the container's exit status.
	code int
	// signal is the signal (SIGINT, SIGTERM) that stopped kuasar and was
	// passed on to the container; 0 when none.
	signal syscall.Signal
	// timedOut reports that the container was killed at its --timeout.
	timedOut bool
}

// runInSandbox runs the container spec describes in a fresh sandbox of b
// through the backend contract, as kuasar-sandboxer does for containerd:
// Backend.Start, then the Instance's Task API Create, Start, Wait and
// Delete, then Shutdown. It is all in-process: no socket is served.
//
// Everything it creates (the sandbox's state directory, the bundle, the
// stdio FIFOs) lives in one private (0700) directory under parent, removed
// at the end. stateless gives the sandbox no state directory, for a
// backend that needs none and mounts nothing (Wasm keeps only records for
// a restarted daemon there, and mounts only rootfs mounts a Create
// request carries, which kuasar sends none of). The FIFOs are pumped to and from env's streams, so the
// container reads kuasar's stdin and writes to its stdout and stderr.
// SIGINT and SIGTERM received meanwhile are passed on to the container
// (ending a Wasm guest at once; a second signal, or the first one when
// the process outlives killGrace, sends SIGKILL); timeout > 0 kills it with
// SIGKILL after that long.
func runInSandbox(ctx context.Context, env *cliEnv, b backend.Backend, sb backend.Sandbox, spec *specs.Spec, parent string, timeout time.Duration, stateless bool) (_ runResult, retErr error) {
	// Which signal stops us decides the exit code (128+signal): learn it
	// before anything runs, so a signal during a long boot counts too.
	// In the kuasar process, main has caught every signal since it
	// started (processSignals), so one that came before this run began
	// (while the module compiled) counts too.
	sigc := processSignals
	if sigc == nil {
		c := make(chan os.Signal, 2)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(c)
		sigc = c
	}

	ctx = namespaces.WithNamespace(ctx, cliNamespace)
	// A sandbox with state (a VM, Quark) runs in a directory of the
	// state directory's, with its owner recorded; what runs that died
	// left there goes first (runstate.go). A stateless one (Wasm, in a
	// shared runtime directory) leaves no process and keeps only FIFOs.
	var dir string
	var err error
	if stateless {
		dir, err = os.MkdirTemp(parent, runPrefix)
	} else {
		if _, rerr := reapDeadRuns(ctx, parent); rerr != nil {
			log.G(ctx).WithError(rerr).Warn("clean up after kuasar runs that died")
		}
		dir, err = newRunDir(parent)
	}
	if err != nil {
		return runResult{}, fmt.Errorf("private run directory: %w", err)
	}
	defer func() {
		remove := removeUnmounted
		if stateless {
			remove = os.RemoveAll // nothing mounts below dir
		}
		if err := remove(dir); err != nil && retErr == nil {
			retErr = err
		}
	}()
	bundle := filepath.Join(dir, "bundle")
	if err := os.Mkdir(bundle, 0o700); err != nil {
		return runResult{}, err
	}
	sj, err := json.Marshal(spec)
	if err != nil {
		return runResult{}, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), sj, 0o600); err != nil {
		return runResult{}, err
	}
	sb.ID = filepath.Base(dir)
	sb.Namespace = cliNamespace
	if !stateless {
		sb.StateDir = filepath.Join(dir, "sandbox")
		if err := os.Mkdir(sb.StateDir, 0o700); err != nil {
			return runResult{}, err
		}
	}

	// Not bound to ctx: Shutdown and Delete must run after a signal too.
	bg := context.WithoutCancel(ctx)
	t0 := time.Now()
	inst, err := b.Start(ctx, sb)
	if err != nil {
		if r, ok := signalled(sigc); ok { // the boot was interrupted
			return r, nil
		}
		return runResult{}, err
	}
	log.G(ctx).WithField("took", time.Since(t0)).Debug("run: sandbox started")
	defer func() {
		t1 := time.Now()
		if err := inst.Shutdown(bg); err != nil && retErr == nil {
			retErr = err
		}
		log.G(ctx).WithField("took", time.Since(t1)).Debug("run: sandbox shut down")
	}()

	stdio, err := newFIFOs(dir, env)
	if err != nil {
		return runResult{}, err
	}
	defer stdio.close()
	tasks := inst.Tasks()
	// Create and Start run to their end (bg): a signal meanwhile is
	// handled below, ending the run with 128+signal.
	if _, err := tasks.Create(bg, &taskAPI.CreateTaskRequest{ID: containerID, Bundle: bundle, Stdin: stdio.paths[0], Stdout: stdio.paths[1], Stderr: stdio.paths[2]}); err != nil {
		if r, ok := signalled(sigc); ok {
			return r, nil
		}
		return runResult{}, fmt.Errorf("%w: %w", errCreate, errgrpc.ToNative(err))
	}
	// The backend opened its ends in Create: from now on EOF on an output
	// means the container closed it.
	var stdinEOF func()
	if b.Name() == quark.Name {
		// Quark opens the FIFOs itself and, like containerd's shims, keeps a
		// writer of stdin for CloseIO: the end of input is told with CloseIO,
		// as containerd does.
		stdinEOF = func() {
			_, _ = tasks.CloseIO(bg, &taskAPI.CloseIORequest{ID: containerID, Stdin: true})
		}
	}
	stdio.pump(env, stdinEOF)
	if stateless {
		// The backend holds the FIFOs and read the bundle: the directory
		// can go now, so that not even a SIGKILL of kuasar leaves it.
		if err := os.RemoveAll(dir); err != nil {
			log.G(ctx).WithError(err).Warn("remove the run directory early")
		}
	}
	deleted := false
	defer func() {
		if !deleted {
			_, _ = tasks.Delete(bg, &taskAPI.DeleteRequest{ID: containerID})
		}
	}()
	if r, ok := signalled(sigc); ok { // before Start: the container never runs
		return r, nil
	}
	if _, err := tasks.Start(bg, &taskAPI.StartRequest{ID: containerID}); err != nil {
		if r, ok := signalled(sigc); ok {
			return r, nil
		}
		return runResult{}, fmt.Errorf("start the container: %w", errgrpc.ToNative(err))
	}

	waited := make(chan struct{})
	stopped := make(chan runResult, 1) // how the watcher stopped the container
	go func() {
		var r runResult
		defer func() { stopped <- r }()
		var timer, grace <-chan time.Time
		if timeout > 0 {
			t := time.NewTimer(timeout)
			defer t.Stop()
			timer = t.C
		}
		kill := func(sig syscall.Signal) {
			kctx, cancel := context.WithTimeout(bg, 10*time.Second)
			defer cancel()
			if _, err := tasks.Kill(kctx, &taskAPI.KillRequest{ID: containerID, Signal: uint32(sig), All: true}); err != nil {
				log.G(ctx).WithError(err).Debug("kill the container")
			}
		}
		for {
			select {
			case s := <-sigc:
				if r.signal != 0 {
					kill(syscall.SIGKILL)
					continue
				}
				r.signal = s.(syscall.Signal)
				kill(r.signal)
				g := time.NewTimer(killGrace)
				defer g.Stop()
				grace = g.C
			case <-grace:
				kill(syscall.SIGKILL)
			case <-timer:
				r.timedOut = true
				kill(syscall.SIGKILL)
			case <-waited:
				return
			}
		}
	}()
	log.G(ctx).WithField("took", time.Since(t0)).Debug("run: container started")
	w, err := tasks.Wait(bg, &taskAPI.WaitRequest{ID: containerID})
	close(waited)
	res := <-stopped
	if err != nil {
		return runResult{}, fmt.Errorf("wait for the container: %w", errgrpc.ToNative(err))
	}
	log.G(ctx).WithField("took", time.Since(t0)).Debug("run: container exited")
	res.code = int(w.ExitStatus)
	dctx, cancel := context.WithTimeout(bg, 10*time.Second)
	_, err = tasks.Delete(dctx, &taskAPI.DeleteRequest{ID: containerID})
	cancel()
	deleted = err == nil
	log.G(ctx).WithField("took", time.Since(t0)).Debug("run: container deleted")
	// The container's output is complete once its FIFOs reach EOF and
	// the copies wrote it out. Not after a kill: kuasar's own stdout may
	// be what nobody reads (the reason it was stopped).
	if !res.timedOut && res.signal == 0 {
		stdio.wait()
	}
	return res, nil
}

// fifos are the stdio FIFOs of the container, in the run's private
// directory, and kuasar's ends of them. The readers of the outputs are
// opened before Create (so the backend's writers open at once), as plain
// nonblocking files on Go's poller, and copied from after it: an output
// FIFO whose writer has not opened yet would read as end of file. The
// writer of stdin is opened after Create, blocking until the backend's
// reader opens (which may happen asynchronously, github.com/containerd/fifo):
// only then can its close be the container's end of input.
type fifos struct {
	paths  [3]string   // stdin, stdout, stderr ("" when env has none)
	files  [3]*os.File // kuasar's ends of stdout and stderr
	copies sync.WaitGroup

	stdinOpen chan struct{} // closed once the stdin writer's open returned
	// stdinPath is an O_PATH handle on the stdin FIFO: the writer is
	// opened through it (/proc/self/fd), so the FIFO's name can go once
	// the backend holds its end.
	stdinPath *os.File
}

func newFIFOs(dir string, env *cliEnv) (_ *fifos, retErr error) {
	f := &fifos{}
	defer func() {
		if retErr != nil {
			f.close()
		}
	}()
	for i, name := range []string{"stdin", "stdout", "stderr"} {
		if (i == 0 && (env.stdin == nil || isDevNull(env.stdin))) || (i == 1 && env.stdout == nil) || (i == 2 && env.stderr == nil) {
			continue // no stream: the container's reads see EOF, as from /dev/null
		}
		p := filepath.Join(dir, name)
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return nil, fmt.Errorf("make the %s FIFO %s: %w", name, p, err)
		}
		f.paths[i] = p
		if i == 0 {
			fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("open the stdin FIFO %s: %w", p, err)
			}
			f.stdinPath = os.NewFile(uintptr(fd), p)
			continue
		}
		r, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open the %s FIFO %s: %w", name, p, err)
		}
		f.files[i] = r
	}
	return f, nil
}

// pump copies between the FIFOs and env's streams until the container
// closes its outputs; stdinEOF, when set, runs once env's stdin ended.
func (f *fifos) pump(env *cliEnv, stdinEOF func()) {
	if f.stdinPath != nil {
		p := f.procPath()
		f.stdinOpen = make(chan struct{})
		// Not waited for: kuasar's stdin may never end.
		go func() {
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			close(f.stdinOpen)
			if err != nil {
				return
			}
			_, _ = copyPlain(w, env.stdin)
			w.Close()
			if stdinEOF != nil {
				stdinEOF()
			}
		}()
	}
	for i, dst := range []io.Writer{nil, env.stdout, env.stderr} {
		if src := f.files[i]; i > 0 && src != nil {
			f.copies.Go(func() { _, _ = copyPlain(dst, src) })
		}
	}
}

// wait returns once the container's outputs reached end of file and were
// copied.
func (f *fifos) wait() { f.copies.Wait() }

// close closes kuasar's ends; the FIFOs go with the run's directory. A
// stdin open still waiting for a reader that never came is released.
func (f *fifos) close() {
	if f.stdinOpen != nil {
		select {
		case <-f.stdinOpen:
		default:
			if r, err := os.OpenFile(f.procPath(), os.O_RDONLY|unix.O_NONBLOCK, 0); err == nil {
				<-f.stdinOpen
				r.Close()
			}
		}
	}
	if f.stdinPath != nil {
		f.stdinPath.Close()
	}
	for _, file := range f.files {
		if file != nil {
			file.Close()
		}
	}
}

// procPath names the stdin FIFO through its O_PATH handle.
func (f *fifos) procPath() string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.stdinPath.Fd()))
}

// copyPlain is io.Copy through a buffer: between a FIFO and a terminal or
// pipe, the copy_file_range and splice attempts *os.File's ReadFrom and
// WriteTo make first only cost system calls.
func copyPlain(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
}

// isDevNull reports whether r is the null device, which has no input to
// pass on.
func isDevNull(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	var st, null unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || unix.Stat(os.DevNull, &null) != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}

// signalled reports a signal already received: the container never ran,
// and kuasar exits as if it had been killed by that signal.
func signalled(sigc <-chan os.Signal) (runResult, bool) {
	select {
	case s := <-sigc:
		sig := s.(syscall.Signal)
		return runResult{code: 128 + int(sig), signal: sig}, true
	default:
		return runResult{}, false
	}
}

// runtimeDir is a parent for short-lived private directories, on tmpfs
// where the host has one ($XDG_RUNTIME_DIR, else /dev/shm): a Wasm run's
// bundle and FIFOs then cost no disk metadata writes.
func runtimeDir() string {
	for _, d := range []string{os.Getenv("XDG_RUNTIME_DIR"), "/dev/shm"} {
		if d == "" {
			continue
		}
		if st, err := os.Stat(d); err == nil && st.IsDir() && unix.Access(d, unix.W_OK|unix.X_OK) == nil {
			return d
		}
	}
	return os.TempDir()
}

// killGrace is how long a container may outlive the signal kuasar passed
// on before it is killed with SIGKILL (a Linux process may ignore SIGINT).
const killGrace = 5 * time.Second

// removeUnmounted removes dir, but never through a mount left behind: a
// container rootfs bind-mounted below it is the user's image.
func removeUnmounted(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("read mountinfo before removing %s: %w", dir, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted: unmount it, then remove the directory: %w", dir, mounts[0].Mountpoint, errdefs.ErrFailedPrecondition)
	}
	return os.RemoveAll(dir)
}
