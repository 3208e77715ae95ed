package service

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	securejoin "github.com/cyphar/filepath-securejoin"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kuasar-go/kuasar/task/agent/internal/guestinit"
	taskapi "github.com/kuasar-go/kuasar/task/agent/internal/taskpb"
)

// Service implements containerd's task.v3 TTRPCTaskService for Linux
// processes in the guest. Create one with New and register it with
// taskapi.RegisterTTRPCTaskService; pass it to NewAgentService for stdio.
type Service struct {
	reaper     *guestinit.Reaper
	helper     string
	bufLimit   int
	shutdown   func()
	helperWait time.Duration
	noPivot    bool
	guestFiles map[string]string
	zygoteOn   bool

	zmu     sync.Mutex
	zyg     *zygote // pre-forked helper waiting for a config, or nil
	zflags  uintptr // namespaces of the next zygote: those of the last create
	zclosed bool    // Shutdown: fork no more zygotes

	mu         sync.Mutex
	containers map[string]*container
}

var _ taskapi.TTRPCTaskService = (*Service)(nil)

// Option configures a Service.
type Option func(*Service)

// WithHelperPath sets the binary re-executed with HelperInit to set up a
// container (default /proc/self/exe, the running agent).
func WithHelperPath(p string) Option { return func(s *Service) { s.helper = p } }

// WithStreamBuffer sets how many bytes of unread output each stream holds
// before the process is blocked (default DefaultStreamBuffer).
func WithStreamBuffer(n int) Option { return func(s *Service) { s.bufLimit = n } }

// WithShutdown sets what Shutdown{now:true} does once no task remains (in
// the guest: guestinit.Poweroff). It runs after the reply has been sent.
func WithShutdown(f func()) Option { return func(s *Service) { s.shutdown = f } }

// WithNoPivot makes containers chroot (after moving their rootfs mount over
// /) instead of pivot_root. The helper falls back to this by itself when
// pivot_root is impossible (the agent runs from an initramfs); the option
// forces it, e.g. to test that path on a host.
func WithNoPivot() Option { return func(s *Service) { s.noPivot = true } }

// DefaultGuestFiles maps container paths that CRI bind-mounts from host
// files (which do not exist in the guest) to the guest files SetupSandbox
// writes for the whole pod.
var DefaultGuestFiles = map[string]string{
	"/etc/resolv.conf": "/run/kuasar/resolv.conf",
	"/etc/hostname":    "/run/kuasar/hostname",
	"/etc/hosts":       "/run/kuasar/hosts",
}

// WithGuestFiles replaces DefaultGuestFiles: a bind mount to one of these
// destinations whose source is missing in the guest gets the mapped guest
// file as source instead of being skipped.
func WithGuestFiles(m map[string]string) Option { return func(s *Service) { s.guestFiles = m } }

// New returns a Service that starts every child through reaper.
func New(reaper *guestinit.Reaper, opts ...Option) *Service {
	s := &Service{
		reaper:     reaper,
		helper:     "/proc/self/exe",
		bufLimit:   DefaultStreamBuffer,
		helperWait: 30 * time.Second,
		containers: map[string]*container{},
		guestFiles: DefaultGuestFiles,
		zflags:     defaultZygoteFlags,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

type container struct {
	id       string
	bundle   string
	rootfs   string
	newPidNS bool
	init     *process
	execs    map[string]*process
}

type process struct {
	id, execID string
	stdinPath  string
	stdoutPath string
	stderrPath string

	// exec processes only, until started
	spec *specs.Process

	mu     sync.Mutex
	pid    int
	status task.Status
	ctrl   *os.File // init only: control socket to the helper until Start
	exited chan struct{}
	exit   guestinit.Exit

	stdin  *inStream
	stdout *outStream
	stderr *outStream
	child  [3]*os.File // the child's ends of the stdio pipes until it is forked
}

func (p *process) state() (task.Status, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.pid
}

func (p *process) watch(ch <-chan guestinit.Exit) {
	e := <-ch
	p.mu.Lock()
	p.exit = e
	p.status = task.Status_STOPPED
	if p.ctrl != nil {
		p.ctrl.Close()
		p.ctrl = nil
	}
	p.mu.Unlock()
	close(p.exited)
}

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

func validID(kind, id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." || len(id) > 256 {
		return fmt.Errorf("%s %q is not valid: use 1-256 characters without '/': %w", kind, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *Service) lookup(id, execID string) (*container, *process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	if execID == "" {
		return c, c.init, nil
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %q in container %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// stdioPipes makes the pipes for the streams that exist (non-empty host
// path): the agent's ends go into p (under p.mu) and the child's ends are
// kept in p until the process is forked (nil child end: /dev/null).
func (s *Service) stdioPipes(p *process) error {
	var in *inStream
	var outs [2]*outStream
	var child [3]*os.File
	var readers [2]*os.File
	cleanup := func() {
		for _, f := range child {
			if f != nil {
				f.Close()
			}
		}
		for _, f := range readers {
			if f != nil {
				f.Close()
			}
		}
		if in != nil {
			in.Close()
		}
	}
	if p.stdinPath != "" {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		child[0] = r
		in = &inStream{w: w}
	}
	for i, path := range []string{p.stdoutPath, p.stderrPath} {
		if path == "" {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			cleanup()
			return err
		}
		readers[i] = r
		child[i+1] = w
	}
	for i, r := range readers {
		if r != nil {
			outs[i] = newOutStream(r, s.bufLimit)
		}
	}
	p.mu.Lock()
	p.stdin, p.stdout, p.stderr = in, outs[0], outs[1]
	p.child = child
	p.mu.Unlock()
	return nil
}

// takeChildStdio hands the child's ends of the pipes to the caller, which
// must close them once the child is forked.
func (p *process) takeChildStdio() (in, out, errw *os.File, closeChild func()) {
	p.mu.Lock()
	c := p.child
	p.child = [3]*os.File{}
	p.mu.Unlock()
	return c[0], c[1], c[2], func() {
		for _, f := range c {
			if f != nil {
				f.Close()
			}
		}
	}
}

func (p *process) closeStreams() {
	p.mu.Lock()
	in := p.stdin
	p.mu.Unlock()
	if in != nil {
		in.Close()
	}
}

// release drops everything the process holds in the agent.
func (p *process) release() {
	p.closeStreams()
	_, _, _, closeChild := p.takeChildStdio()
	closeChild()
}

// Create implements TTRPCTaskService: it validates the bundle, forks the
// set-up helper in new namespaces and leaves it waiting for Start.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	pid, err := s.create(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).WithField("container", r.ID).Warn("create failed")
		return nil, grpcErr(err)
	}
	return &taskapi.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// readConfig reads a bundle's config.json with as few reads as possible
// (each is a round trip when the bundle is on 9p): no stat, one 64 KiB read
// for any usual spec.
func readConfig(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	buf.Grow(64 << 10)
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// plainName reports whether p is a single path component other than . and ..
func plainName(p string) bool {
	return p != "" && p != "." && p != ".." && !strings.ContainsRune(p, '/')
}

func loadSpec(bundle string) (*specs.Spec, string, error) {
	if !filepath.IsAbs(bundle) {
		return nil, "", fmt.Errorf("bundle %q must be an absolute guest path: %w", bundle, errdefs.ErrInvalidArgument)
	}
	b, err := readConfig(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: read config.json: %w; the host must share the bundle into the guest: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, "", fmt.Errorf("bundle %s: config.json is not a valid runtime-spec document: %w: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, "", fmt.Errorf("bundle %s: config.json has no process.args; set the command to run: %w", bundle, errdefs.ErrInvalidArgument)
	}
	rootPath := "rootfs"
	if spec.Root != nil && spec.Root.Path != "" {
		rootPath = spec.Root.Path
	}
	var rootfs string
	if plainName(rootPath) {
		// One component that is a directory, not a symlink: nothing to
		// resolve (and one round trip over 9p instead of two).
		p := filepath.Join(bundle, rootPath)
		if st, err := os.Lstat(p); err == nil && st.IsDir() {
			return &spec, p, nil
		}
	}
	if filepath.IsAbs(rootPath) {
		rootfs = filepath.Clean(rootPath)
	} else if rootfs, err = securejoin.SecureJoin(bundle, rootPath); err != nil {
		return nil, "", fmt.Errorf("bundle %s: root.path %q: %w: %w", bundle, rootPath, err, errdefs.ErrInvalidArgument)
	}
	st, err := os.Stat(rootfs)
	if err != nil || !st.IsDir() {
		return nil, "", fmt.Errorf("bundle %s: rootfs %s is not a directory (root.path %q); the host must populate it before Create: %w", bundle, rootfs, rootPath, errdefs.ErrInvalidArgument)
	}
	return &spec, rootfs, nil
}

func (s *Service) create(ctx context.Context, r *taskapi.CreateTaskRequest) (int, error) {
	if err := validID("container id", r.ID); err != nil {
		return 0, err
	}
	if r.Terminal {
		return 0, fmt.Errorf("container %q: terminal=true is not supported by the kuasar guest agent yet; run without a tty: %w", r.ID, errdefs.ErrNotImplemented)
	}
	if r.Checkpoint != "" {
		return 0, fmt.Errorf("container %q: restoring from a checkpoint is not supported: %w", r.ID, errdefs.ErrNotImplemented)
	}
	t0 := time.Now()
	spec, rootfs, err := loadSpec(r.Bundle)
	if err != nil {
		return 0, err
	}
	tSpec := time.Since(t0)
	cloneFlags := uintptr(unix.CLONE_NEWNS)
	setHostname := false
	newPid := false
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Path != "" {
				// A path names a namespace on the host; inside the VM the
				// whole pod shares the guest's namespaces instead.
				continue
			}
			switch ns.Type {
			case specs.PIDNamespace:
				cloneFlags |= unix.CLONE_NEWPID
				newPid = true
			case specs.UTSNamespace:
				cloneFlags |= unix.CLONE_NEWUTS
				setHostname = true
			case specs.IPCNamespace:
				cloneFlags |= unix.CLONE_NEWIPC
			case specs.UserNamespace:
				return 0, fmt.Errorf("container %q: user namespaces are not supported in the guest; remove linux.namespaces type=user: %w", r.ID, errdefs.ErrNotImplemented)
			}
		}
	}
	cfg := helperConfig{
		Rootfs:      rootfs,
		Hostname:    spec.Hostname,
		SetHostname: setHostname,
		Mounts:      s.mapGuestFiles(spec.Mounts),
		Args:        spec.Process.Args,
		Env:         spec.Process.Env,
		Cwd:         spec.Process.Cwd,
		UID:         spec.Process.User.UID,
		GID:         spec.Process.User.GID,
		Groups:      spec.Process.User.AdditionalGids,
	}
	if spec.Root != nil {
		cfg.ReadonlyRootfs = spec.Root.Readonly
	}
	cfg.Rlimits = spec.Process.Rlimits
	if spec.Linux != nil {
		cfg.MaskedPaths = spec.Linux.MaskedPaths
		cfg.ReadonlyPaths = spec.Linux.ReadonlyPaths
	}

	s.mu.Lock()
	if _, ok := s.containers[r.ID]; ok {
		s.mu.Unlock()
		return 0, fmt.Errorf("container %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	// Reserve the id while we work without the lock.
	c := &container{id: r.ID, bundle: r.Bundle, rootfs: rootfs, newPidNS: newPid, execs: map[string]*process{}}
	p := &process{id: r.ID, stdinPath: r.Stdin, stdoutPath: r.Stdout, stderrPath: r.Stderr,
		status: task.Status_CREATED, exited: make(chan struct{})}
	c.init = p
	s.containers[r.ID] = c
	s.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			s.mu.Lock()
			delete(s.containers, r.ID)
			s.mu.Unlock()
			s.scheduleRefill(ctx)
		}
	}()

	if err := s.stdioPipes(p); err != nil {
		return 0, fmt.Errorf("stdio pipes: %w", err)
	}
	in, out, errw, closeChild := p.takeChildStdio()
	var (
		pid    int
		exitCh <-chan guestinit.Exit
		parent *os.File
		zyg    bool
	)
	if z := s.takeZygote(cloneFlags); z != nil {
		zcfg := cfg
		if cloneFlags&unix.CLONE_NEWUTS != 0 && zcfg.Hostname == "" {
			// The zygote's uts namespace was copied when it was forked;
			// give the container the guest's hostname as of now, as a
			// cold fork would.
			if h, err := os.Hostname(); err == nil {
				zcfg.Hostname, zcfg.SetHostname = h, true
			}
		}
		enc, _ := json.Marshal(zcfg)
		if err := z.waitParked(s.helperWait); err != nil {
			log.G(ctx).WithError(err).WithField("container", r.ID).Debug("zygote unusable, taking the cold path")
			z.kill()
		} else if err := sendToZygote(z.ctrl, append(enc, '\n'), in, out, errw); err != nil {
			log.G(ctx).WithError(err).WithField("container", r.ID).Debug("zygote unusable, taking the cold path")
			z.kill()
		} else {
			pid, exitCh, parent, zyg = z.pid, z.exit, z.ctrl, true
		}
	}
	if !zyg {
		pid, exitCh, parent, err = s.spawnHelper(cloneFlags, false, in, out, errw)
	}
	closeChild()
	if err != nil {
		p.closeStreams()
		return 0, fmt.Errorf("start container set-up helper: %w", err)
	}
	tFork := time.Since(t0)
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
	go p.watch(exitCh)
	abort := func(e error) (int, error) {
		unix.Kill(pid, unix.SIGKILL)
		<-p.exited
		parent.Close()
		p.closeStreams()
		return 0, e
	}
	if !zyg {
		enc, _ := json.Marshal(cfg)
		if _, err := parent.Write(append(enc, '\n')); err != nil {
			return abort(fmt.Errorf("send config to set-up helper: %w", err))
		}
	}
	parent.SetReadDeadline(time.Now().Add(s.helperWait))
	reply, err := bufio.NewReader(parent).ReadString('\n')
	parent.SetReadDeadline(time.Time{})
	reply = strings.TrimSpace(reply)
	helperTook := strings.TrimSpace(strings.TrimPrefix(reply, ctrlOK))
	switch {
	case err == nil && strings.HasPrefix(reply, ctrlOK):
	case strings.HasPrefix(reply, ctrlErr):
		return abort(fmt.Errorf("container %q: %s: %w", r.ID, strings.TrimPrefix(reply, ctrlErr), errdefs.ErrInvalidArgument))
	default:
		return abort(fmt.Errorf("container %q: set-up helper failed without a reply (%v): %w", r.ID, err, errdefs.ErrInternal))
	}
	p.mu.Lock()
	p.ctrl = parent
	p.mu.Unlock()
	ok = true
	log.G(ctx).WithField("container", r.ID).WithField("pid", pid).WithField("spec", tSpec).WithField("forked", tFork).
		WithField("ready", time.Since(t0)).WithField("helper", helperTook).WithField("zygote", zyg).Debug("container created")
	return pid, nil
}

// spawnHelper forks the set-up helper in new namespaces (flags) through
// the reaper with the given stdio (nil: /dev/null) and returns its pid, exit
// channel and the agent's end of its control socket. A zygote gets no stdio:
// it receives it with its config.
func (s *Service) spawnHelper(flags uintptr, zygote bool, in, out, errw *os.File) (int, <-chan guestinit.Exit, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("control socket: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "ctrl")
	child := os.NewFile(uintptr(fds[1]), "ctrl-child")
	defer child.Close()
	helperEnv := []string{}
	if s.noPivot {
		helperEnv = append(helperEnv, envNoPivot+"=1")
	}
	args := []string{"kuasar-task", HelperInit}
	if zygote {
		args = append(args, helperZygote)
	}
	cmd := &exec.Cmd{
		Path:       s.helper,
		Args:       args,
		Env:        helperEnv,
		Stdin:      in,
		Stdout:     out,
		Stderr:     errw,
		ExtraFiles: []*os.File{child},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setsid:     true,
		},
	}
	pid, exitCh, err := s.reaper.Start(func() (int, error) {
		start := cmd.Start
		if zygote {
			start = func() error { return startIdle(cmd.Start) }
		}
		if err := start(); err != nil {
			return 0, err
		}
		pid := cmd.Process.Pid
		// The reaper owns the exit status; drop os.Process's pidfd.
		_ = cmd.Process.Release()
		return pid, nil
	})
	if err != nil {
		parent.Close()
		return 0, nil, nil, err
	}
	return pid, exitCh, parent, nil
}

// mapGuestFiles points bind mounts of host-only files (CRI's resolv.conf,
// hostname, hosts) at the pod-wide guest files.
func (s *Service) mapGuestFiles(mounts []specs.Mount) []specs.Mount {
	out := make([]specs.Mount, len(mounts))
	copy(out, mounts)
	for i, m := range out {
		src, ok := s.guestFiles[filepath.Clean(m.Destination)]
		if !ok || (m.Type != "bind" && !slices.Contains(m.Options, "bind") && !slices.Contains(m.Options, "rbind")) {
			continue
		}
		if _, err := os.Stat(m.Source); err == nil {
			continue
		}
		if _, err := os.Stat(src); err == nil {
			out[i].Source = src
		}
	}
	return out
}

// Start implements TTRPCTaskService: it releases a created init process or
// forks an exec process.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	pid, err := s.start(ctx, r)
	if err != nil {
		return nil, grpcErr(err)
	}
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

func (s *Service) start(ctx context.Context, r *taskapi.StartRequest) (int, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return 0, err
	}
	if r.ExecID != "" {
		return s.startExec(ctx, c, p)
	}
	p.mu.Lock()
	if p.status != task.Status_CREATED || p.ctrl == nil {
		st := p.status
		p.mu.Unlock()
		return 0, fmt.Errorf("container %q is %s, not created: %w", r.ID, st, errdefs.ErrFailedPrecondition)
	}
	ctrl := p.ctrl
	p.ctrl = nil
	p.mu.Unlock()
	defer ctrl.Close()
	defer s.scheduleRefill(ctx)
	t0 := time.Now()
	defer func() {
		log.G(ctx).WithField("container", r.ID).WithField("took", time.Since(t0)).Debug("container released")
	}()
	if _, err := ctrl.Write([]byte(ctrlStart + "\n")); err != nil {
		return 0, fmt.Errorf("container %q: release process: %w: %w", r.ID, err, errdefs.ErrFailedPrecondition)
	}
	reply, err := bufio.NewReader(ctrl).ReadString('\n')
	if err == nil && strings.HasPrefix(reply, ctrlErr) {
		<-p.exited
		return 0, fmt.Errorf("container %q: %s: %w", r.ID, strings.TrimSpace(strings.TrimPrefix(reply, ctrlErr)), errdefs.ErrFailedPrecondition)
	}
	p.mu.Lock()
	if p.status == task.Status_CREATED {
		p.status = task.Status_RUNNING
	}
	pid := p.pid
	p.mu.Unlock()
	return pid, nil
}

func (s *Service) startExec(ctx context.Context, c *container, p *process) (int, error) {
	ist, ipid := c.init.state()
	if ist != task.Status_RUNNING {
		return 0, fmt.Errorf("container %q is %s; exec needs a running container: %w", c.id, ist, errdefs.ErrFailedPrecondition)
	}
	p.mu.Lock()
	if p.status != task.Status_CREATED || p.pid != 0 {
		p.mu.Unlock()
		return 0, fmt.Errorf("exec %q in container %q was already started: %w", p.execID, c.id, errdefs.ErrFailedPrecondition)
	}
	spec := p.spec
	p.mu.Unlock()

	root := fmt.Sprintf("/proc/%d/root", ipid)
	bin, err := lookPath(root, spec.Args[0], spec.Env)
	if err != nil {
		return 0, fmt.Errorf("exec %q in container %q: %w: %w", p.execID, c.id, err, errdefs.ErrInvalidArgument)
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	in, out, errw, closeChild := p.takeChildStdio()
	cmd := &exec.Cmd{
		Path:   bin,
		Args:   spec.Args,
		Env:    spec.Env,
		Dir:    cwd,
		Stdin:  in,
		Stdout: out,
		Stderr: errw,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot: root,
			Setsid: true,
			Credential: &syscall.Credential{
				Uid: spec.User.UID, Gid: spec.User.GID, Groups: spec.User.AdditionalGids,
			},
		},
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	pid, exitCh, err := s.forkInNamespaces(ipid, cmd)
	closeChild()
	if err != nil {
		p.closeStreams()
		return 0, fmt.Errorf("exec %q in container %q: %w: %w", p.execID, c.id, err, errdefs.ErrFailedPrecondition)
	}
	p.mu.Lock()
	p.pid = pid
	p.status = task.Status_RUNNING
	p.mu.Unlock()
	go p.watch(exitCh)
	return pid, nil
}

// forkInNamespaces starts cmd in the pid, uts and ipc namespaces of target.
// setns only changes the calling thread, so it runs on a dedicated, locked
// OS thread that is thrown away afterwards (the goroutine exits locked).
// The mount view comes from cmd's chroot into /proc/<target>/root: joining a
// mount namespace needs a single-threaded process, which Go is not.
func (s *Service) forkInNamespaces(target int, cmd *exec.Cmd) (int, <-chan guestinit.Exit, error) {
	type result struct {
		pid int
		ch  <-chan guestinit.Exit
		err error
	}
	res := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		for _, ns := range []struct {
			name string
			flag int
		}{{"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}, {"pid", unix.CLONE_NEWPID}} {
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", target, ns.name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				res <- result{err: fmt.Errorf("open %s namespace: %w", ns.name, err)}
				return
			}
			err = unix.Setns(fd, ns.flag)
			unix.Close(fd)
			if err != nil {
				res <- result{err: fmt.Errorf("join %s namespace: %w", ns.name, err)}
				return
			}
		}
		pid, ch, err := s.reaper.Start(func() (int, error) {
			if err := cmd.Start(); err != nil {
				return 0, err
			}
			pid := cmd.Process.Pid
			// The reaper owns the exit status; drop os.Process's pidfd.
			_ = cmd.Process.Release()
			return pid, nil
		})
		res <- result{pid, ch, err}
	}()
	r := <-res
	return r.pid, r.ch, r.err
}

// State implements TTRPCTaskService.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &taskapi.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: c.bundle, Pid: uint32(p.pid), Status: p.status,
		Stdin: p.stdinPath, Stdout: p.stdoutPath, Stderr: p.stderrPath,
	}
	if p.status == task.Status_STOPPED {
		resp.ExitStatus = uint32(p.exit.Status)
		resp.ExitedAt = timestamppb.New(p.exit.At)
	}
	return resp, nil
}

// Wait implements TTRPCTaskService: it blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, grpcErr(fmt.Errorf("wait for %s/%s: %w", r.ID, r.ExecID, ctx.Err()))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return &taskapi.WaitResponse{ExitStatus: uint32(p.exit.Status), ExitedAt: timestamppb.New(p.exit.At)}, nil
}

// Kill implements TTRPCTaskService. With all=true on the init process the
// signal goes to every process of the container.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, grpcErr(s.kill(r))
}

func (s *Service) kill(r *taskapi.KillRequest) error {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return err
	}
	sig := unix.Signal(r.Signal)
	if r.Signal == 0 || r.Signal > 64 {
		return fmt.Errorf("signal %d is not a valid Linux signal (1-64): %w", r.Signal, errdefs.ErrInvalidArgument)
	}
	st, pid := p.state()
	if st == task.Status_STOPPED {
		return fmt.Errorf("process %s/%s already finished: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
	}
	if pid == 0 {
		return fmt.Errorf("process %s/%s was not started: %w", r.ID, r.ExecID, errdefs.ErrFailedPrecondition)
	}
	if r.All && r.ExecID == "" {
		for _, q := range s.containerPids(c) {
			if q != pid {
				_ = unix.Kill(q, sig)
			}
		}
	}
	if err := unix.Kill(pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %s/%s already finished: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
		}
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	return nil
}

// containerPids lists the pids (in the agent's namespace) of every process
// of c: everything in its pid namespace, or its init and execs when it
// shares the agent's.
func (s *Service) containerPids(c *container) []int {
	_, ipid := c.init.state()
	var pids []int
	if c.newPidNS && ipid != 0 {
		want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ipid))
		if err == nil {
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				pid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns == want {
					pids = append(pids, pid)
				}
			}
			return pids
		}
	}
	s.mu.Lock()
	procs := []*process{c.init}
	for _, e := range c.execs {
		procs = append(procs, e)
	}
	s.mu.Unlock()
	for _, p := range procs {
		if st, pid := p.state(); st != task.Status_STOPPED && pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Pids implements TTRPCTaskService.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	resp := &taskapi.PidsResponse{}
	for _, pid := range s.containerPids(c) {
		resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: uint32(pid)})
	}
	return resp, nil
}

// Delete implements TTRPCTaskService: it forgets a stopped (or never
// started) process and returns its exit status. A created init process is
// killed first; a running one must be killed by the caller.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	resp, err := s.delete(ctx, r)
	return resp, grpcErr(err)
}

func (s *Service) delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, pid := p.state()
	switch {
	case st == task.Status_RUNNING:
		return nil, fmt.Errorf("process %s/%s (pid %d) is still running; kill it before delete: %w", r.ID, r.ExecID, pid, errdefs.ErrFailedPrecondition)
	case st == task.Status_CREATED && pid != 0:
		_ = unix.Kill(pid, unix.SIGKILL)
		select {
		case <-p.exited:
		case <-ctx.Done():
			return nil, fmt.Errorf("delete %s: %w", r.ID, ctx.Err())
		}
	}
	p.release()
	s.mu.Lock()
	if r.ExecID == "" {
		for _, e := range c.execs {
			e.release()
		}
		delete(s.containers, r.ID)
	} else {
		delete(c.execs, r.ExecID)
	}
	s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &taskapi.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exit.Status)}
	if p.status == task.Status_STOPPED {
		resp.ExitedAt = timestamppb.New(p.exit.At)
	} else {
		resp.ExitedAt = timestamppb.Now()
	}
	return resp, nil
}

// Exec implements TTRPCTaskService: it records an exec process, which Start
// forks into the container.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, grpcErr(s.exec(r))
}

func (s *Service) exec(r *taskapi.ExecProcessRequest) error {
	if err := validID("exec id", r.ExecID); err != nil {
		return err
	}
	if r.Terminal {
		return fmt.Errorf("exec %q: terminal=true is not supported by the kuasar guest agent yet; exec without a tty: %w", r.ExecID, errdefs.ErrNotImplemented)
	}
	if r.Spec == nil || len(r.Spec.Value) == 0 {
		return fmt.Errorf("exec %q: spec is missing; send the runtime-spec Process as JSON: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.Value, &spec); err != nil {
		return fmt.Errorf("exec %q: spec is not a runtime-spec Process JSON document: %w: %w", r.ExecID, err, errdefs.ErrInvalidArgument)
	}
	if len(spec.Args) == 0 {
		return fmt.Errorf("exec %q: process.args is empty; set the command to run: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[r.ID]
	if !ok {
		return fmt.Errorf("container %q: %w", r.ID, errdefs.ErrNotFound)
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return fmt.Errorf("exec %q in container %q: %w", r.ExecID, r.ID, errdefs.ErrAlreadyExists)
	}
	p := &process{id: r.ID, execID: r.ExecID, spec: &spec,
		stdinPath: r.Stdin, stdoutPath: r.Stdout, stderrPath: r.Stderr,
		status: task.Status_CREATED, exited: make(chan struct{})}
	if err := s.stdioPipes(p); err != nil {
		return fmt.Errorf("exec %q: stdio pipes: %w", r.ExecID, err)
	}
	c.execs[r.ExecID] = p
	return nil
}

// CloseIO implements TTRPCTaskService: stdin=true closes the process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, grpcErr(err)
	}
	if r.Stdin {
		p.closeStreams()
	}
	return &emptypb.Empty{}, nil
}

// ResizePty implements TTRPCTaskService; terminals are not supported.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, grpcErr(fmt.Errorf("resize pty of %s/%s: the kuasar guest agent does not support terminals yet: %w", r.ID, r.ExecID, errdefs.ErrNotImplemented))
}

// Pause implements TTRPCTaskService; not supported (no freezer in the guest).
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return nil, grpcErr(fmt.Errorf("pause %s: not supported by the kuasar guest agent: %w", r.ID, errdefs.ErrNotImplemented))
}

// Resume implements TTRPCTaskService; not supported.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return nil, grpcErr(fmt.Errorf("resume %s: not supported by the kuasar guest agent: %w", r.ID, errdefs.ErrNotImplemented))
}

// Checkpoint implements TTRPCTaskService; not supported.
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, grpcErr(fmt.Errorf("checkpoint %s: not supported by the kuasar guest agent: %w", r.ID, errdefs.ErrNotImplemented))
}

// Update implements TTRPCTaskService; resource updates are not supported
// (the VM's size is the limit).
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, grpcErr(fmt.Errorf("update %s: resource updates are not supported inside the VM; resize the sandbox instead: %w", r.ID, errdefs.ErrNotImplemented))
}

// Connect implements TTRPCTaskService: the "shim" is the agent.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: "3"}
	if r.ID != "" {
		_, p, err := s.lookup(r.ID, "")
		if err != nil {
			return nil, grpcErr(err)
		}
		_, pid := p.state()
		resp.TaskPid = uint32(pid)
	}
	return resp, nil
}

// Shutdown implements TTRPCTaskService: with now=true and no task left it
// runs the shutdown hook (power off in the guest) after replying; with tasks
// left it refuses; without now it does nothing.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	if !r.Now {
		return &emptypb.Empty{}, nil
	}
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return nil, grpcErr(fmt.Errorf("shutdown: %d task(s) remain; delete them first: %w", n, errdefs.ErrFailedPrecondition))
	}
	s.closeZygote()
	if s.shutdown != nil {
		go func() {
			time.Sleep(100 * time.Millisecond) // let the reply reach the host
			s.shutdown()
		}()
	}
	return &emptypb.Empty{}, nil
}

// stream returns the output stream (fd 1 or 2) or stdin of a process.
func (s *Service) outStream(id, execID string, fd int) (*outStream, error) {
	_, p, err := s.lookup(id, execID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	st := p.stdout
	if fd == 2 {
		st = p.stderr
	}
	p.mu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("process %s/%s has no captured fd %d (create it with a non-empty stdout/stderr): %w", id, execID, fd, errdefs.ErrNotFound)
	}
	return st, nil
}

// ReadOutput blocks until output of the process's fd 1 or 2 is available
// and returns at most max bytes; io.EOF (wrapped as ErrOutOfRange) at end.
func (s *Service) ReadOutput(ctx context.Context, id, execID string, fd, max int) ([]byte, error) {
	st, err := s.outStream(id, execID, fd)
	if err != nil {
		return nil, err
	}
	b, err := st.Read(ctx, max)
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("fd %d of %s/%s: %w: %w", fd, id, execID, io.EOF, errdefs.ErrOutOfRange)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read fd %d of %s/%s: %w", fd, id, execID, ctx.Err())
		}
		return nil, err
	}
	return b, nil
}

// WriteInput writes to the stdin of a process.
func (s *Service) WriteInput(ctx context.Context, id, execID string, data []byte) (int, error) {
	_, p, err := s.lookup(id, execID)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	in := p.stdin
	p.mu.Unlock()
	if in == nil {
		return 0, fmt.Errorf("process %s/%s has no stdin (create it with a non-empty stdin): %w", id, execID, errdefs.ErrNotFound)
	}
	n, err := in.Write(ctx, data)
	if err != nil {
		return n, fmt.Errorf("write stdin of %s/%s: %w: %w", id, execID, err, errdefs.ErrFailedPrecondition)
	}
	return n, nil
}

// CloseInput closes the stdin of a process.
func (s *Service) CloseInput(ctx context.Context, id, execID string) error {
	_, p, err := s.lookup(id, execID)
	if err != nil {
		return err
	}
	p.closeStreams()
	return nil
}

// Stats implements TTRPCTaskService (see stats.go).
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, grpcErr(err)
	}
	a, err := procStats(s.containerPids(c))
	if err != nil {
		return nil, grpcErr(err)
	}
	return &taskapi.StatsResponse{Stats: a}, nil
}
