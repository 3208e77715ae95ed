// Package stack runs a private containerd and kuasar-sandboxer wired
// together under ONE temporary directory: containerd's root and state, its
// gRPC and ttrpc sockets, its shim socket directory, the sandboxer's socket,
// state directory, Wasm compilation cache and both configuration files. It
// touches none of the system's paths (/run/containerd, /run/kuasar,
// /var/lib/...), so it runs beside a system containerd, and Close removes
// everything it made: pods, processes (its daemons' process groups, every
// process a sandbox marked, every containerd, shim, QEMU... whose command
// line names the directory), VM template memory on /dev/shm, mounts,
// sockets and files. A stack whose owner was SIGKILLed (no Close) is
// removed by the next Start.
//
// `kuasar demo` runs pods on it, benchmarks can time CRI calls on it, and
// docs/sandboxer.md's private set-up is the same configuration written by
// hand. containerd is configured with the kuasar proxy sandboxer and the
// shipped runtime handlers (configs/containerd-config.toml: "kuasar" for
// Wasm, "kuasar-vm" for micro-VMs), optionally the stock runc handler.
//
// A Stack ends with Close, also when its caller is interrupted: run it under
// signal.NotifyContext and defer Close. The daemons run in process groups of
// their own, so a terminal's ^C reaches the caller, not them, and Close can
// still remove the pods through CRI before it stops them; they are also
// killed (SIGKILL, PR_SET_PDEATHSIG) if the caller dies without Close.
package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/moby/sys/mountinfo"

	"github.com/kuasar-go/kuasar/configs"
	"github.com/kuasar-go/kuasar/images"
	"github.com/kuasar-go/kuasar/internal/procmark"
	"github.com/kuasar-go/kuasar/vm/vmbackend"
)

// Runtime handlers of the shipped containerd configuration.
const (
	// HandlerWasm is the CRI runtime handler whose pods default to Wasm.
	HandlerWasm = "kuasar"
	// HandlerVM is the CRI runtime handler whose pods default to micro-VMs.
	HandlerVM = "kuasar-vm"
	// HandlerRunc is the stock runc handler (Options.Runc).
	HandlerRunc = "runc"
)

// Options configure Start. The zero value is a working stack: tools found
// by FindTools, kuasar's binaries by FindBinaries, the directory under
// $TMPDIR.
type Options struct {
	// Tools are explicit tool paths; empty ones are found by FindTools.
	Tools Tools
	// BinDir holds kuasar-sandboxer and containerd-shim-kuasar-v1
	// ("" = FindBinaries).
	BinDir string
	// Parent is where the stack's directory is created ("" = $TMPDIR).
	// Keep it short: socket paths must stay under 108 bytes.
	Parent string
	// SandboxerConfig is TOML appended to the sandboxer's configuration
	// file (for example a [hypervisor.qemu] table). The file already sets
	// [hypervisor.qemu] template = "off" unless VMTemplates is true: give
	// the whole table here to change other QEMU keys.
	SandboxerConfig string
	// VMTemplates keeps the VM backend's template = "auto" (a template
	// built at the first VM pod, its memory on /dev/shm until Close).
	VMTemplates bool
	// SandboxerEnv is added to the sandboxer's environment.
	SandboxerEnv []string
	// LogLevel of the sandboxer ("" = info); containerd logs at info.
	LogLevel string
	// Runc adds the stock runc handler (needs containerd-shim-runc-v2 and
	// runc) beside kuasar's, for baselines.
	Runc bool
	// ContainerdLog and SandboxerLog receive the daemons' output ("" =
	// files containerd.log and sandboxer.log in the stack's directory,
	// which Logs reads).
	ContainerdLog, SandboxerLog io.Writer
	// Timeout bounds each daemon's start (default 30 s).
	Timeout time.Duration
}

// Stack is a running containerd and kuasar-sandboxer. Its fields are the
// paths a client needs; all of them are under Dir.
type Stack struct {
	// Dir is the one directory everything lives under.
	Dir string
	// Tools are the resolved tool paths.
	Tools Tools
	// BinDir holds kuasar-sandboxer and containerd-shim-kuasar-v1.
	BinDir string

	// ContainerdSock and ContainerdTTRPC are containerd's sockets.
	ContainerdSock, ContainerdTTRPC string
	// ContainerdConfig is containerd's configuration file.
	ContainerdConfig string
	// SandboxerSock is the Sandbox API socket containerd dials.
	SandboxerSock string
	// SandboxerState is the sandboxer's state directory.
	SandboxerState string
	// SandboxerConfig is the sandboxer's configuration file.
	SandboxerConfig string
	// WasmCache is the sandboxer's compiled-module cache.
	WasmCache string

	containerd, sandboxer *child

	closeOnce sync.Once
	closeErr  error
}

// child is a daemon the stack started, leader of its own process group.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Start creates the stack's directory, writes both configurations and
// starts kuasar-sandboxer, then containerd, each waited for on its socket.
// On any error everything started so far is removed before it returns.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("a private containerd needs root (mounts, network namespaces, VMs): run as root or with sudo: %w", errdefs.ErrPermissionDenied)
	}
	tools, err := FindTools(o.Tools)
	if err != nil {
		return nil, err
	}
	if o.Runc && tools.RuncShim == "" {
		return nil, fmt.Errorf("the runc handler needs containerd-shim-runc-v2 %s: run make deps: %w", ContainerdVersion, errdefs.ErrNotFound)
	}
	bin, err := FindBinaries(o.BinDir)
	if err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	removeAbandoned(ctx, o.Parent)
	dir, err := os.MkdirTemp(o.Parent, dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("stack directory: %w", err)
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Stack{
		Dir: dir, Tools: tools, BinDir: bin,
		ContainerdSock:   filepath.Join(dir, "containerd.sock"),
		ContainerdTTRPC:  filepath.Join(dir, "containerd.sock.ttrpc"),
		ContainerdConfig: filepath.Join(dir, "containerd.toml"),
		SandboxerSock:    filepath.Join(dir, "sandboxer.sock"),
		SandboxerState:   filepath.Join(dir, stateSubdir),
		SandboxerConfig:  filepath.Join(dir, "kuasar.toml"),
		WasmCache:        filepath.Join(dir, "wasm-cache"),
	}
	if len(s.ContainerdTTRPC) > 100 {
		s.Close()
		return nil, fmt.Errorf("socket path %s is too long for a unix socket: use a shorter Options.Parent or $TMPDIR: %w", s.ContainerdTTRPC, errdefs.ErrInvalidArgument)
	}
	if err := s.start(ctx, o); err != nil {
		logs := s.Logs()
		s.Close()
		if logs != "" {
			return nil, fmt.Errorf("%w\n%s", err, logs)
		}
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, o Options) error {
	// The paths are flags (docs/sandboxer.md's private set-up); the file
	// holds the rest.
	kcfg := "# kuasar-sandboxer configuration of a private stack (internal/stack)\n"
	if !o.VMTemplates {
		kcfg += "[hypervisor.qemu]\ntemplate = \"off\"\n"
	}
	kcfg += o.SandboxerConfig
	if err := os.WriteFile(s.SandboxerConfig, []byte(kcfg), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(s.ContainerdConfig, []byte(s.containerdConfig(o.Runc)), 0o600); err != nil {
		return err
	}
	level := o.LogLevel
	if level == "" {
		level = "info"
	}
	var err error
	s.sandboxer, err = startChild(s.Dir, "sandboxer", o.SandboxerLog, o.SandboxerEnv, filepath.Join(s.BinDir, "kuasar-sandboxer"),
		"--config", s.SandboxerConfig, "--listen", s.SandboxerSock, "--state-dir", s.SandboxerState, "--log-level", level,
		"--containerd-address", s.ContainerdSock, "--containerd-ttrpc-address", s.ContainerdTTRPC, "--wasm-cache-dir", s.WasmCache)
	if err != nil {
		return err
	}
	if err := waitSocket(ctx, s.SandboxerSock, o.Timeout, s.sandboxer); err != nil {
		return err
	}
	path := s.BinDir + ":" + os.Getenv("PATH")
	if o.Runc {
		path = filepath.Dir(s.Tools.RuncShim) + ":" + path
	}
	s.containerd, err = startChild(s.Dir, "containerd", o.ContainerdLog, []string{"PATH=" + path}, s.Tools.Containerd,
		"--config", s.ContainerdConfig, "--log-level", "info")
	if err != nil {
		return err
	}
	return waitSocket(ctx, s.ContainerdSock, o.Timeout, s.containerd)
}

// containerdConfig is the shipped snippet with its sandboxer socket and
// containerd's own paths moved into the stack (configs.PrivateContainerd).
func (s *Stack) containerdConfig(runc bool) string {
	return configs.PrivateContainerd{Dir: s.Dir, GRPC: s.ContainerdSock, TTRPC: s.ContainerdTTRPC, Sandboxer: s.SandboxerSock, Runc: runc}.Config()
}

func startChild(dir, name string, w io.Writer, env []string, bin string, args ...string) (*child, error) {
	c := &child{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	if w == nil {
		f, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		c.log, w = f, f
	}
	c.cmd.Stdout, c.cmd.Stderr = w, w
	c.cmd.Env = append(os.Environ(), env...)
	// A process group of its own: ^C in a terminal reaches the caller
	// only, and Close kills the whole group. Pdeathsig ends it if the
	// caller dies without Close.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		if c.log != nil {
			c.log.Close()
		}
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, waits up to grace, then
// SIGKILLs the group and waits for the leader.
func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	pgid := c.cmd.Process.Pid
	if !c.exited() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
		}
	}
	// The group may outlive its leader (helpers it forked).
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-c.done
	if c.log != nil {
		c.log.Close()
	}
}

// waitSocket polls path until it accepts a connection, p exits, ctx ends
// or timeout passes.
func waitSocket(ctx context.Context, path string, timeout time.Duration, p *child) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before serving %s (%v): %w", p.name, path, p.cmd.ProcessState, errdefs.ErrUnavailable)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve %s after %v: %w", p.name, path, timeout, context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", p.name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ContainerdPid and SandboxerPid are the daemons' pids (0 when not running).
func (s *Stack) ContainerdPid() int { return s.containerd.pid() }

// SandboxerPid is the sandboxer's pid (0 when not running).
func (s *Stack) SandboxerPid() int { return s.sandboxer.pid() }

func (c *child) pid() int {
	if c == nil || c.exited() {
		return 0
	}
	return c.cmd.Process.Pid
}

// Logs returns the last lines of both daemons' log files (when they log to
// the stack's directory), for error reports.
func (s *Stack) Logs() string {
	var b strings.Builder
	for _, n := range []string{"sandboxer", "containerd"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, n+".log"))
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "--- %s log (last lines) ---\n%s\n", n, lastLines(string(data), 15))
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CrictlArgs prefixes args with the endpoint flags that point crictl at
// the stack's containerd (no /etc/crictl.yaml needed) and a timeout.
func (s *Stack) CrictlArgs(args ...string) []string {
	ep := "unix://" + s.ContainerdSock
	return append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}, args...)
}

// Crictl runs crictl against the stack and returns its trimmed standard
// output; an error carries its standard error.
func (s *Stack) Crictl(ctx context.Context, args ...string) (string, error) {
	out, err := run(ctx, s.Tools.Crictl, s.CrictlArgs(args...)...)
	return strings.TrimSpace(out), err
}

// Ctr runs ctr against the stack's containerd in CRI's namespace, k8s.io.
func (s *Stack) Ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, s.Tools.Ctr, append([]string{"-a", s.ContainerdSock, "-n", "k8s.io"}, args...)...)
}

// ImportImage writes img as an OCI archive named ref and imports it into
// containerd's k8s.io namespace, unpacked for platform ("" = the host's;
// Wasm images need "wasi/wasm": CRI unpacks only the host platform).
func (s *Stack) ImportImage(ctx context.Context, img *images.MemoryImage, ref, platform string) error {
	f, err := os.CreateTemp(s.Dir, "image-*.tar")
	if err != nil {
		return err
	}
	p := f.Name()
	f.Close()
	defer os.Remove(p)
	if err := img.WriteArchiveFile(p, ref); err != nil {
		return fmt.Errorf("write %s: %w", ref, err)
	}
	args := []string{"images", "import"}
	if platform != "" {
		args = append(args, "--platform", platform)
	}
	if _, err := s.Ctr(ctx, append(args, p)...); err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	return nil
}

func run(ctx context.Context, bin string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(lastLines(stderr.String(), 8))
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// Close removes everything the stack made, idempotently: every pod (through
// CRI, so that the sandboxer stops their sandboxes and VMs), then both
// daemons (SIGTERM to their process groups, SIGKILL after a grace period),
// every process still marked by a sandbox under Dir or naming Dir on its
// command line, every mount under Dir, and Dir itself. It runs whatever
// the state of the stack, so a stack whose start failed halfway or whose
// caller was interrupted is removed all the same; it returns what it could
// not remove.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Stack) close() error {
	ctx := context.Background()
	if s.containerd.pid() != 0 && s.sandboxer.pid() != 0 {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		s.RemovePods(rctx)
		cancel()
	}
	s.containerd.stop(10 * time.Second)
	s.sandboxer.stop(10 * time.Second)
	return removeDir(ctx, s.Dir)
}

// removeDir removes a stack's directory and everything of it that lives
// elsewhere: its processes (sandbox-marked ones and those of the stack's
// programs that name dir), its VM templates' memory on /dev/shm, every
// mount under dir, then dir. It refuses a directory that is not a
// stack's (by its name), so that no mistake can reach other mounts.
func removeDir(ctx context.Context, dir string) error {
	if !filepath.IsAbs(dir) || !strings.HasPrefix(filepath.Base(dir), dirPrefix) {
		return fmt.Errorf("%q is not a stack directory (%s*): refusing to remove it: %w", dir, dirPrefix, errdefs.ErrInvalidArgument)
	}
	var errs []error
	for _, p := range ProcessesUnder(dir) {
		if err := procmark.Kill(p); err != nil {
			errs = append(errs, err)
		}
	}
	// VM templates keep their memory on /dev/shm, outside dir.
	if tb, err := vmbackend.New(ctx, vmbackend.WithTemplateDir(filepath.Join(dir, stateSubdir, "vm-templates"))); err != nil {
		errs = append(errs, err)
	} else if err := tb.RemoveTemplates(ctx); err != nil {
		errs = append(errs, err)
	}
	mps := MountsUnder(dir)
	for i := len(mps) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mps[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mps[i], err))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// Layout of a stack's directory.
const (
	// dirPrefix starts the name of every stack directory.
	dirPrefix = "kuasar-stack-"
	// stateSubdir is the sandboxer's state directory.
	stateSubdir = "k"
	// ownerFile records the process that made the stack (procmark.Proc,
	// JSON): a stack whose owner is gone was abandoned (SIGKILL).
	ownerFile = "owner.json"
)

// removeAbandoned removes the stacks under parent whose owner process is
// gone: a caller killed with SIGKILL cannot run Close, and its daemons
// die with it (PR_SET_PDEATHSIG) but its VMs, mounts and files would
// stay. A stack being created (no owner file yet) is left alone.
func removeAbandoned(ctx context.Context, parent string) {
	if parent == "" {
		parent = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(parent, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue
		}
		var owner procmark.Proc
		if json.Unmarshal(b, &owner) != nil || owner.Pid <= 0 || procmark.Alive(owner) {
			continue
		}
		if err := removeDir(ctx, d); err != nil {
			log.G(ctx).WithError(err).WithField("dir", d).Warn("remove abandoned stack")
		} else {
			log.G(ctx).WithField("dir", d).Info("removed a stack whose owner was killed")
		}
	}
}

// writeOwner records the calling process as the owner of the stack in dir.
func writeOwner(dir string) error {
	self, err := procmark.Identify(os.Getpid())
	if err != nil {
		return err
	}
	b, err := json.Marshal(self)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), b, 0o600)
}

// RemovePods stops and removes every pod CRI knows, so that the sandboxer
// shuts their sandboxes (and VMs) down. Errors are returned joined; each
// pod is tried.
func (s *Stack) RemovePods(ctx context.Context) error {
	out, err := s.Crictl(ctx, "pods", "-q")
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range strings.Fields(out) {
		if _, err := s.Crictl(ctx, "stopp", id); err != nil {
			errs = append(errs, err)
		}
		if _, err := s.Crictl(ctx, "rmp", "-f", id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Processes lists the processes that belong to the stack apart from its
// two daemons' leaders: those a sandbox marked with an owner under Dir
// (VMMs, virtiofsd: internal/procmark) and those whose command line names
// Dir (shims, helpers). After Close it is empty.
func (s *Stack) Processes() []procmark.Proc {
	if s.Dir == "" {
		return nil
	}
	return ProcessesUnder(s.Dir, s.containerd.pid(), s.sandboxer.pid())
}

// ProcessesUnder lists the processes, other than the caller and skip,
// that a sandbox marked with an owner under dir (internal/procmark) or
// whose command line names a path under dir: what a stack in dir still
// runs. Tests check it is empty after Close.
func ProcessesUnder(dir string, skip ...int) []procmark.Proc {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []procmark.Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || slices.Contains(skip, pid) {
			continue
		}
		p, err := procmark.Identify(pid)
		if err != nil {
			continue
		}
		if procmark.Under(p.Owner, dir) {
			out = append(out, p)
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) && ours(cmdline) {
			out = append(out, procmark.Proc{Pid: pid, StartTime: p.StartTime})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out
}

// stackPrograms are the programs a stack runs: a process naming the
// stack's directory is the stack's only if it is one of them (a user's
// `tail -f DIR/containerd.log` is not).
var stackPrograms = []string{"containerd", "kuasar", "crictl", "ctr", "qemu", "virtiofsd", "runc"}

// ours reports whether the program of cmdline (NUL-separated argv) is one
// of stackPrograms.
func ours(cmdline []byte) bool {
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	base := filepath.Base(string(argv0))
	for _, p := range stackPrograms {
		if strings.HasPrefix(base, p) {
			return true
		}
	}
	return false
}

// MountsUnder lists the mount points below dir, in mount order (for
// cleanup, and for leak checks in tests).
func MountsUnder(dir string) []string {
	ms, _ := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, dir+"/"), false
	})
	var mps []string
	for _, m := range ms {
		mps = append(mps, m.Mountpoint)
	}
	return mps
}
