package service

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kuasar-go/kuasar/task/agent/agentapi"
)

// DefaultReadLen is how many bytes ReadStdout/ReadStderr return at most
// when the request's len is 0.
const DefaultReadLen = 32 << 10

// MaxReadLen caps the len of one ReadStdout/ReadStderr call, well under
// ttrpc's 4 MiB message limit.
const MaxReadLen = 1 << 20

// AgentService implements kuasar.agent.v1.Agent on top of a Service.
type AgentService struct {
	tasks       *Service
	version     string
	resolvPaths []string
	podDir      string
	sethostname func(string) error
	setClock    func(time.Time) error
	addEntropy  func([]byte) error
	mount       func(source, target, fstype string, flags uintptr, data string) error
}

var _ agentapi.AgentService = (*AgentService)(nil)

// AgentOption configures an AgentService.
type AgentOption func(*AgentService)

// WithVersion sets the agent_version Ping reports.
func WithVersion(v string) AgentOption { return func(a *AgentService) { a.version = v } }

// WithResolvConf sets the files SetupSandbox writes the DNS settings to
// (default /run/kuasar/resolv.conf and /etc/resolv.conf).
func WithResolvConf(paths ...string) AgentOption {
	return func(a *AgentService) { a.resolvPaths = paths }
}

// WithPodFilesDir sets where SetupSandbox writes the pod's hostname and
// hosts files (default /run/kuasar), which containers get instead of CRI's
// host-side files (see DefaultGuestFiles).
func WithPodFilesDir(dir string) AgentOption { return func(a *AgentService) { a.podDir = dir } }

// WithSystemHooks replaces the calls that change the whole guest (hostname,
// clock, mount), so SetupSandbox can be tested on a host. A nil argument
// keeps the real call.
func WithSystemHooks(sethostname func(string) error, setClock func(time.Time) error, mount func(source, target, fstype string, flags uintptr, data string) error) AgentOption {
	return func(a *AgentService) {
		if sethostname != nil {
			a.sethostname = sethostname
		}
		if setClock != nil {
			a.setClock = setClock
		}
		if mount != nil {
			a.mount = mount
		}
	}
}

// NewAgentService returns the agent service serving stdio of tasks.
func NewAgentService(tasks *Service, opts ...AgentOption) *AgentService {
	a := &AgentService{
		tasks:       tasks,
		version:     "dev",
		resolvPaths: []string{"/run/kuasar/resolv.conf", "/etc/resolv.conf"},
		podDir:      "/run/kuasar",
		sethostname: func(h string) error { return unix.Sethostname([]byte(h)) },
		setClock: func(t time.Time) error {
			tv := unix.NsecToTimeval(t.UnixNano())
			return unix.Settimeofday(&tv)
		},
		mount:      unix.Mount,
		addEntropy: addEntropy,
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Ping implements agentapi.AgentService.
func (a *AgentService) Ping(ctx context.Context, _ *agentapi.PingRequest) (*agentapi.PingResponse, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, grpcErr(fmt.Errorf("uname: %w", err))
	}
	return &agentapi.PingResponse{KernelRelease: unix.ByteSliceToString(u.Release[:]), AgentVersion: a.version}, nil
}

// SetupSandbox implements agentapi.AgentService: clock, hostname, DNS, then
// mounts, stopping at the first failure.
func (a *AgentService) SetupSandbox(ctx context.Context, r *agentapi.SetupSandboxRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, grpcErr(a.setup(ctx, r))
}

func (a *AgentService) setup(ctx context.Context, r *agentapi.SetupSandboxRequest) error {
	if len(r.Entropy) > MaxEntropy {
		return fmt.Errorf("entropy of %d bytes: at most %d are accepted: %w", len(r.Entropy), MaxEntropy, errdefs.ErrInvalidArgument)
	}
	if len(r.Entropy) > 0 {
		if err := a.addEntropy(r.Entropy); err != nil {
			return fmt.Errorf("add the host's entropy to the guest's pool: %w", err)
		}
	}
	if r.ClockUnixNano != 0 {
		if err := a.setClock(time.Unix(0, r.ClockUnixNano)); err != nil {
			return fmt.Errorf("set guest clock: %w", err)
		}
	}
	if r.Hostname != "" {
		if len(r.Hostname) > 64 {
			return fmt.Errorf("hostname %q is longer than 64 bytes: %w", r.Hostname, errdefs.ErrInvalidArgument)
		}
		if err := a.sethostname(r.Hostname); err != nil {
			return fmt.Errorf("set hostname %q: %w", r.Hostname, err)
		}
		if err := os.MkdirAll(a.podDir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", a.podDir, err)
		}
		hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", r.Hostname)
		for name, content := range map[string]string{"hostname": r.Hostname + "\n", "hosts": hosts} {
			if err := os.WriteFile(filepath.Join(a.podDir, name), []byte(content), 0o644); err != nil {
				return fmt.Errorf("write pod %s file: %w", name, err)
			}
		}
	}
	if len(r.DnsServers) > 0 || len(r.DnsSearches) > 0 {
		var b strings.Builder
		for _, s := range r.DnsServers {
			if strings.ContainsAny(s, " \t\n") || s == "" {
				return fmt.Errorf("dns server %q is not an address: %w", s, errdefs.ErrInvalidArgument)
			}
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if len(r.DnsSearches) > 0 {
			for _, s := range r.DnsSearches {
				if strings.ContainsAny(s, " \t\n") || s == "" {
					return fmt.Errorf("dns search domain %q is not a domain: %w", s, errdefs.ErrInvalidArgument)
				}
			}
			fmt.Fprintf(&b, "search %s\n", strings.Join(r.DnsSearches, " "))
		}
		for _, p := range a.resolvPaths {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
			if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
	}
	for i, m := range r.Mounts {
		if m.Target == "" || !filepath.IsAbs(m.Target) || filepath.Clean(m.Target) == "/" {
			return fmt.Errorf("mounts[%d]: target %q must be an absolute path other than /: %w", i, m.Target, errdefs.ErrInvalidArgument)
		}
		if m.Fstype == "" {
			return fmt.Errorf("mounts[%d]: fstype is empty; set e.g. 9p, virtiofs or tmpfs: %w", i, errdefs.ErrInvalidArgument)
		}
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return fmt.Errorf("mounts[%d]: create %s: %w", i, m.Target, err)
		}
		flags, _, data, _ := parseMountOptions(m.Options)
		if err := a.mount(m.Source, m.Target, m.Fstype, flags, data); err != nil {
			return fmt.Errorf("mounts[%d]: mount %s (%s) on %s with %q: %w; is the file-system module loaded in the guest?", i, m.Source, m.Fstype, m.Target, data, err)
		}
		log.G(ctx).WithField("target", m.Target).WithField("fstype", m.Fstype).Debug("sandbox mount")
	}
	// Make sure a pre-forked helper that can see these mounts waits.
	if len(r.Mounts) > 0 {
		a.tasks.afterMounts(ctx)
	} else {
		a.tasks.Prewarm(ctx)
	}
	return nil
}

func readLen(n uint32) int {
	switch {
	case n == 0:
		return DefaultReadLen
	case n > MaxReadLen:
		return MaxReadLen
	}
	return int(n)
}

// ReadStdout implements agentapi.AgentService.
func (a *AgentService) ReadStdout(ctx context.Context, r *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error) {
	b, err := a.tasks.ReadOutput(ctx, r.ContainerId, r.ExecId, 1, readLen(r.Len))
	if err != nil {
		return nil, grpcErr(err)
	}
	return &agentapi.ReadStreamResponse{Data: b}, nil
}

// ReadStderr implements agentapi.AgentService.
func (a *AgentService) ReadStderr(ctx context.Context, r *agentapi.ReadStreamRequest) (*agentapi.ReadStreamResponse, error) {
	b, err := a.tasks.ReadOutput(ctx, r.ContainerId, r.ExecId, 2, readLen(r.Len))
	if err != nil {
		return nil, grpcErr(err)
	}
	return &agentapi.ReadStreamResponse{Data: b}, nil
}

// WriteStdin implements agentapi.AgentService.
func (a *AgentService) WriteStdin(ctx context.Context, r *agentapi.WriteStreamRequest) (*agentapi.WriteStreamResponse, error) {
	n, err := a.tasks.WriteInput(ctx, r.ContainerId, r.ExecId, r.Data)
	if err != nil {
		return nil, grpcErr(err)
	}
	return &agentapi.WriteStreamResponse{Len: uint32(n)}, nil
}

// CloseStdin implements agentapi.AgentService.
func (a *AgentService) CloseStdin(ctx context.Context, r *agentapi.CloseStdinRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, grpcErr(a.tasks.CloseInput(ctx, r.ContainerId, r.ExecId))
}
